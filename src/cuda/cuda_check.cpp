#include "cuda/cuda_check.h"

#include <fmt/format.h>

#include "core/error.h"

namespace ds::gpu {

void throw_error(const std::string& msg) { throw Error(msg); }

void throw_cuda_error(cudaError_t e, const char* call, const char* file, int line) {
  cudaGetLastError();  // clear a sticky launch error so the next check reports its own failure
  throw Error(fmt::format("CUDA error: {} failed at {}:{}: {} ({})", call, file, line, cudaGetErrorString(e),
                          cudaGetErrorName(e)));
}

void throw_cublas_error(cublasStatus_t s, const char* call, const char* file, int line) {
  throw Error(fmt::format("cuBLAS error: {} failed at {}:{}: {} ({})", call, file, line,
                          cublasLtGetStatusString(s), cublasLtGetStatusName(s)));
}

}  // namespace ds::gpu
