// Error checking for the CUDA runtime and cuBLAS(Lt): every failing call becomes a ds::Error that
// names the call, the file and line, and the library's message. Library code never exits.
// This header is free of fmt (nvcc in C++20 mode cannot compile fmt 9's headers), so .cu files use
// it and DS_GPU_REQUIRE(cond, std::string) instead of core/error.h's DS_CHECK.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <string>

namespace ds::gpu {

[[noreturn]] void throw_error(const std::string& msg);  // throws ds::Error(msg)

[[noreturn]] void throw_cuda_error(cudaError_t e, const char* call, const char* file, int line);
[[noreturn]] void throw_cublas_error(cublasStatus_t s, const char* call, const char* file, int line);

inline void cuda_check(cudaError_t e, const char* call, const char* file, int line) {
  if (e != cudaSuccess) throw_cuda_error(e, call, file, line);
}
inline void cublas_check(cublasStatus_t s, const char* call, const char* file, int line) {
  if (s != CUBLAS_STATUS_SUCCESS) throw_cublas_error(s, call, file, line);
}

}  // namespace ds::gpu

// DS_CUDA_CHECK(cudaMalloc(&p, n)): throws ds::Error "cudaMalloc(&p, n) failed at file:line: <message>".
#define DS_CUDA_CHECK(call) ::ds::gpu::cuda_check((call), #call, __FILE__, __LINE__)
// After a kernel launch: catches launch-configuration errors (not asynchronous faults).
#define DS_CUDA_CHECK_LAUNCH() ::ds::gpu::cuda_check(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)
#define DS_CUBLAS_CHECK(call) ::ds::gpu::cublas_check((call), #call, __FILE__, __LINE__)
namespace ds::gpu {
// Raises the dynamic shared memory limit of `kernel` to `bytes` on the current device (the kernels'
// configure_* functions, called by configure_kernels once per DeviceContext).
template <typename... KArgs> void set_max_dynamic_smem(void (*kernel)(KArgs...), size_t bytes) {
  DS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}
}  // namespace ds::gpu

#define DS_GPU_REQUIRE(cond, msg)            \
  do {                                       \
    if (!(cond)) ::ds::gpu::throw_error(msg); \
  } while (0)
