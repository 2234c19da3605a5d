// Random FP8 weights for the GPU tests of the FP8 kernels (test_fp8.cpp, test_fp8_tma.cpp): e4m3 bytes with
// fp32 scales of a (row shift, k shift) block layout, and their dequantized values for host references.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "core/dtype.h"
#include "cuda/kernels/gemv.h"
#include "gpu_test_util.h"

namespace ds::gpu::test {

// A random FP8 matrix set [mats, N, K] with scales of layout (rs, ks) and its dequantized values.
struct HostFp8 {
  int64_t mats = 1, N = 0, K = 0, ld = 1;
  int rs = 0, ks = 31;
  std::vector<uint8_t> q;
  std::vector<float> scale, dq;
  int64_t scale_rows() const { return (N + (int64_t(1) << rs) - 1) >> rs; }
};
inline HostFp8 random_fp8(int64_t mats, int64_t N, int64_t K, int rs, int ks, uint64_t seed) {
  HostFp8 m{mats, N, K, ks >= 31 ? 1 : (K + (int64_t(1) << ks) - 1) >> ks, rs, ks, {}, {}, {}};
  const auto w = randn(size_t(mats * N * K), seed, 0.05f);
  const auto sr = randu(size_t(mats * m.scale_rows() * m.ld), seed + 1, 0.5f, 2.f);
  m.q.resize(w.size());
  for (size_t i = 0; i < w.size(); ++i) m.q[i] = f32_to_fp8_e4m3(w[i] * 448.f / 0.25f);
  m.scale.resize(sr.size());
  for (size_t i = 0; i < sr.size(); ++i) m.scale[i] = sr[i] * 0.25f / 448.f;
  m.dq.resize(w.size());
  for (int64_t e = 0; e < mats; ++e)
    for (int64_t r = 0; r < N; ++r)
      for (int64_t k = 0; k < K; ++k) {
        const int64_t i = (e * N + r) * K + k;
        m.dq[size_t(i)] = fp8_e4m3_to_f32(m.q[size_t(i)]) * m.scale[size_t((e * m.scale_rows() + (r >> rs)) * m.ld + (k >> ks))];
      }
  return m;
}

// The x split's scale of a block whose |max| is amax: the least power of two s with amax / s <= 448 (1 for zero).
inline float x_split_scale(float amax) {
  if (amax == 0.f) return 1.f;
  float s = 0x1p-126f;
  while (amax / s > 448.f) s *= 2.f;
  return s;
}

// x [rows, K] rounded as the FP8 wgmma kernel's hi part reads it (MoeGemmParams::x_hi_only): per row and
// 128-column block, e4m3(x / s) * s with s = x_split_scale of the block's |max|.
inline std::vector<float> x_hi_rounded(const std::vector<float>& x, int64_t rows, int64_t K) {
  std::vector<float> out(x.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k0 = 0; k0 < K; k0 += 128) {
      float amax = 0.f;
      for (int64_t k = k0; k < k0 + 128; ++k) amax = std::max(amax, std::fabs(x[size_t(r * K + k)]));
      const float s = x_split_scale(amax);
      for (int64_t k = k0; k < k0 + 128; ++k)
        out[size_t(r * K + k)] = fp8_e4m3_to_f32(f32_to_fp8_e4m3(x[size_t(r * K + k)] / s)) * s;
    }
  return out;
}

// Points p at the FP8 matrices on the device (q, scale) with m's scale layout.
inline void set_fp8(GemvParams& p, const HostFp8& m, const DeviceBuffer& q, const DeviceBuffer& scale) {
  p.w = q.data();
  p.w_scale = scale.as<float>();
  p.scale_ld = m.ld;
  p.scale_row_shift = m.rs;
  p.scale_k_shift = m.ks;
  p.scale_matrix_stride = m.scale_rows() * m.ld;
}

}  // namespace ds::gpu::test
