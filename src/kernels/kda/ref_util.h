// Internal helpers shared by the KDA CPU twins (not part of the op interface).
#pragma once
#include <cmath>
#include <cstdint>

#include "core/error.h"
#include "kernels/kda/op.h"

namespace ds::kernels::kda_detail {

struct Layout {
  int64_t ldq, ldk, ldv, H, K, V;
  float scale;
};

inline Layout resolve(const KdaParams& p, const char* what) {
  DS_CHECK(p.q && p.k && p.v && p.g && p.beta && p.o && p.state && p.cu_seqlens && p.slots,
           "{}: null pointer in parameters", what);
  DS_CHECK(p.H > 0 && p.K > 0 && p.V > 0, "{}: bad sizes H={} K={} V={}", what, p.H, p.K, p.V);
  Layout l{p.ldq ? p.ldq : p.H * p.K, p.ldk ? p.ldk : p.H * p.K, p.ldv ? p.ldv : p.H * p.V,
           p.H, p.K, p.V, p.scale != 0.0f ? p.scale : float(1.0 / std::sqrt(double(p.K)))};
  return l;
}

// dst = scale · src / sqrt(Σ src² + 1e-6) when `norm`, else scale · src.
inline void load_normalised(const float* src, int64_t n, bool norm, float scale, float* dst) {
  float s = scale;
  if (norm) {
    double ss = 0.0;
    for (int64_t i = 0; i < n; ++i) ss += double(src[i]) * double(src[i]);
    s = float(double(scale) / std::sqrt(ss + 1e-6));
  }
  for (int64_t i = 0; i < n; ++i) dst[i] = src[i] * s;
}

}  // namespace ds::kernels::kda_detail
