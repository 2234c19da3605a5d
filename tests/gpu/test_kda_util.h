// Helpers for the KDA / MLA GPU kernel tests: device upload/download in the activation type, relative
// L2 errors, random inputs. Tolerances (justified in the tests):
//   fp32 activations: the kernels use 3xTF32 tensor-core products (~fp32) and ex2.approx (rel 2^-22)
//   bf16 activations: operands and some intermediates are rounded to bf16 (rel 2^-9 each)
#pragma once
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "cuda/cuda_check.h"
#include "cuda/device_buffer.h"
#include "gpu_test_util.h"

namespace ds::attn_test {

using gpu::test::test_ctx;
using ds::test::rel_l2;

inline size_t act_size(DType act) { return act == DType::BF16 ? 2 : 4; }
inline const char* act_name(DType act) { return act == DType::BF16 ? "bf16" : "f32"; }

template <typename T> gpu::DeviceBuffer upload(const std::vector<T>& v) {
  gpu::DeviceBuffer b(std::max<size_t>(v.size() * sizeof(T), 16), "test upload");
  DS_CUDA_CHECK(cudaMemcpy(b.data(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return b;
}
template <typename T> std::vector<T> download(const gpu::DeviceBuffer& b, size_t n) {
  std::vector<T> v(n);
  DS_CUDA_CHECK(cudaMemcpy(v.data(), b.data(), n * sizeof(T), cudaMemcpyDeviceToHost));
  return v;
}

// An activation tensor: `host` holds the values exactly as the device sees them (bf16-rounded).
struct Act {
  std::vector<float> host;
  gpu::DeviceBuffer dev;
};
inline Act make_act(std::vector<float> v, DType act) {
  Act a;
  if (act == DType::BF16) {
    std::vector<uint16_t> h(v.size());
    for (size_t i = 0; i < v.size(); ++i) {
      h[i] = f32_to_bf16(v[i]);
      v[i] = bf16_to_f32(h[i]);
    }
    a.dev = upload(h);
  } else {
    a.dev = upload(v);
  }
  a.host = std::move(v);
  return a;
}
// Uninitialised-looking output buffer: every byte 0xFF (NaN in both fp32 and bf16).
inline gpu::DeviceBuffer poisoned(size_t n, DType act) {
  gpu::DeviceBuffer b(std::max<size_t>(n * act_size(act), 16), "test output");
  DS_CUDA_CHECK(cudaMemset(b.data(), 0xFF, n * act_size(act)));
  return b;
}
inline std::vector<float> download_act(const gpu::DeviceBuffer& b, size_t n, DType act) {
  if (act == DType::F32) return download<float>(b, n);
  const auto h = download<uint16_t>(b, n);
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = bf16_to_f32(h[i]);
  return v;
}

inline std::vector<float> normal(size_t n, std::mt19937_64& rng, float mean = 0.f, float sd = 1.f) {
  std::normal_distribution<float> d(mean, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// KDA inputs of T tokens and H heads (K = V = 128), shaped like the model's: g is the softplus gate
// −exp(A_log)·softplus(u) with per-head A_log in [0, 1] (decay per token 0.01..3 nats); `strong` makes
// one channel in eight decay by 5..60 nats per token (unbounded gate; exercises the overflow-safe paths).
struct KdaData {
  int T = 0, H = 0;
  std::vector<float> q, k, v, g, beta;
};
inline KdaData make_kda_data(int T, int H, std::mt19937_64& rng, bool strong) {
  constexpr int D = 128;
  KdaData x;
  x.T = T;
  x.H = H;
  x.q = normal(size_t(T) * H * D, rng);
  x.k = normal(size_t(T) * H * D, rng);
  x.v = normal(size_t(T) * H * D, rng);
  std::uniform_real_distribution<float> ua(0.f, 1.f), us(5.f, 60.f);
  std::normal_distribution<float> nu(-2.f, 1.f), nb(0.f, 1.5f);
  std::vector<float> a(H);
  for (auto& ah : a) ah = std::exp(ua(rng));
  x.g.resize(size_t(T) * H * D);
  for (int t = 0; t < T; ++t)
    for (int h = 0; h < H; ++h)
      for (int d = 0; d < D; ++d) {
        const float u = nu(rng);
        float gv = -a[h] * (u > 20.f ? u : std::log1p(std::exp(u)));
        if (strong && d % 8 == 3) gv = -us(rng);
        x.g[(size_t(t) * H + h) * D + d] = gv;
      }
  x.beta.resize(size_t(T) * H);
  for (auto& b : x.beta) b = 1.f / (1.f + std::exp(-nb(rng)));
  return x;
}

inline std::string lens_str(const std::vector<int>& lens) {
  std::string s;
  for (size_t i = 0; i < lens.size(); ++i) s += (i ? "," : "") + std::to_string(lens[i]);
  return s;
}

}  // namespace ds::attn_test
