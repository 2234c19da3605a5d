// Helpers for the GPU op harness and model tests: device buffers filled from host vectors, random
// inputs, bf16 rounding (so CPU twins see exactly the GPU's inputs) and error metrics.
#pragma once
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "../common/metrics.h"
#include "config/runtime_env.h"
#include "core/dtype.h"
#include "cuda/cuda_check.h"
#include "cuda/device_buffer.h"
#include "cuda/device_context.h"

namespace ds::gpu::test {

using ds::test::rel_l2;

inline bool have_gpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}
#define DS_REQUIRE_GPU() \
  if (!::ds::gpu::test::have_gpu()) GTEST_FAIL() << "no CUDA device: the gpu tests need one"

// A test whose model needs more device memory than the card has (the 48B config in bf16: 91.5 GiB of weights,
// which an 80 GB H100 cannot hold) is skipped with the numbers; on the project's H200 it runs.
#define DS_REQUIRE_DEVICE_GIB(gib, what)                                                                  \
  DS_REQUIRE_GPU();                                                                                       \
  if (const double have_gib_ = double(::ds::gpu::device_info().total_mem) / double(1ull << 30); have_gib_ < (gib)) \
  GTEST_SKIP() << (what) << " needs " << (gib) << " GiB of device memory; this device has " << have_gib_

// The context the op tests launch on: the current device's default stream with the process's switches
// (DELTASERVE_CUDA_PDL=0 launches without PDL), made (and its kernels configured) once per test process,
// as a backend makes its own at start-up.
inline const DeviceContext& test_ctx() {
  static const DeviceContext ctx = make_device_context(nullptr, cuda_env());
  return ctx;
}

// Runs body with a test file's switch flag (which its launches copy into their context) off, then on,
// each traced by name; the flag is left off.
inline void with_switch_off_and_on(bool& flag, const char* name, const std::function<void()>& body) {
  for (const bool on : {false, true}) {
    SCOPED_TRACE(std::string(name) + (on ? " on" : " off"));
    flag = on;
    body();
  }
  flag = false;
}

inline std::vector<float> randn(size_t n, uint64_t seed, float scale = 1.f) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}
inline std::vector<float> randu(size_t n, uint64_t seed, float lo, float hi) {
  std::mt19937_64 g(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

// Values as the device holds them in dtype t (bf16: rounded).
inline std::vector<float> rounded(std::vector<float> v, DType t) {
  if (t == DType::BF16)
    for (auto& x : v) x = round_bf16(x);
  return v;
}

// A device copy of `v` in dtype t (F32 or BF16).
inline DeviceBuffer to_device(const std::vector<float>& v, DType t) {
  DeviceBuffer b(std::max<size_t>(v.size() * dtype_size(t), 16));
  if (t == DType::F32) {
    DS_CUDA_CHECK(cudaMemcpy(b.data(), v.data(), v.size() * 4, cudaMemcpyHostToDevice));
  } else {
    std::vector<uint16_t> h(v.size());
    for (size_t i = 0; i < v.size(); ++i) h[i] = f32_to_bf16(v[i]);
    DS_CUDA_CHECK(cudaMemcpy(b.data(), h.data(), h.size() * 2, cudaMemcpyHostToDevice));
  }
  return b;
}
template <typename T>
inline DeviceBuffer to_device_raw(const std::vector<T>& v) {
  DeviceBuffer b(std::max<size_t>(v.size() * sizeof(T), 16));
  DS_CUDA_CHECK(cudaMemcpy(b.data(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return b;
}

inline std::vector<float> to_host(const void* d, size_t n, DType t) {
  std::vector<float> out(n);
  DS_CUDA_CHECK(cudaDeviceSynchronize());
  if (t == DType::F32) {
    DS_CUDA_CHECK(cudaMemcpy(out.data(), d, n * 4, cudaMemcpyDeviceToHost));
  } else {
    std::vector<uint16_t> h(n);
    DS_CUDA_CHECK(cudaMemcpy(h.data(), d, n * 2, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; ++i) out[i] = bf16_to_f32(h[i]);
  }
  return out;
}
template <typename T>
inline std::vector<T> to_host_raw(const void* d, size_t n) {
  std::vector<T> out(n);
  DS_CUDA_CHECK(cudaDeviceSynchronize());
  DS_CUDA_CHECK(cudaMemcpy(out.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
  return out;
}

// Fills a device buffer with NaN (poison) so unwritten outputs are caught.
inline void poison(DeviceBuffer& b) { DS_CUDA_CHECK(cudaMemset(b.data(), 0xff, b.bytes())); }

// Tensor-name prefix of sequence length T in the tiny KDA fixture (kda_ops.safetensors): "T<T>.".
// (Appended in steps: "T" + to_string + "." trips GCC 12's -Wrestrict at -O3.)
inline std::string kda_fixture_prefix(int T) {
  std::string pre = "T";
  pre += std::to_string(T);
  pre += '.';
  return pre;
}

// Tolerance on relative L2 error for outputs stored in dtype t when the CPU twin saw the same
// (rounded) inputs: bf16 output rounding alone is ~2^-9 per element (~2e-3 relative L2, more after a
// nonlinearity), fp32 differs only by accumulation order (~1e-7 per add, ~1e-6 over long sums).
inline double tol(DType t) { return t == DType::BF16 ? 1e-2 : 1e-5; }

}  // namespace ds::gpu::test
