#include <cmath>

#include "core/error.h"
#include "core/parallel.h"
#include "kernels/common/math.h"
#include "kernels/norm/op.h"

namespace ds::kernels {
namespace {

inline float inv_rms(const float* x, int64_t dim, float eps) {
  double ss = 0.0;
  for (int64_t i = 0; i < dim; ++i) ss += double(x[i]) * double(x[i]);
  return float(1.0 / std::sqrt(ss / double(dim) + double(eps)));
}

}  // namespace

void run_rmsnorm_cpu(const RmsNormParams& p) {
  if (p.rows == 0) return;
  DS_CHECK(p.x && p.w && p.y && p.dim > 0, "rmsnorm: bad parameters (rows {}, dim {})", p.rows, p.dim);
  const int64_t ldx = p.ldx ? p.ldx : p.dim, ldy = p.ldy ? p.ldy : p.dim;
  parallel_for(size_t(p.rows), [&](size_t b, size_t e) {
    for (size_t r = b; r < e; ++r) {
      const float* x = p.x + int64_t(r) * ldx;
      float* y = p.y + int64_t(r) * ldy;
      const float s = inv_rms(x, p.dim, p.eps);
      for (int64_t i = 0; i < p.dim; ++i) y[i] = (x[i] * s) * p.w[i];
    }
  }, 16);
}

void run_gated_rmsnorm_cpu(const GatedRmsNormParams& p) {
  if (p.rows == 0) return;
  DS_CHECK(p.x && p.gate && p.w && p.y && p.dim > 0, "gated rmsnorm: bad parameters (rows {}, dim {})",
           p.rows, p.dim);
  parallel_for(size_t(p.rows), [&](size_t b, size_t e) {
    for (size_t r = b; r < e; ++r) {
      const float* x = p.x + int64_t(r) * p.dim;
      const float* g = p.gate + int64_t(r) * p.dim;
      float* y = p.y + int64_t(r) * p.dim;
      const float s = inv_rms(x, p.dim, p.eps);
      for (int64_t i = 0; i < p.dim; ++i) y[i] = (x[i] * s) * p.w[i] * sigmoid(g[i]);
    }
  }, 16);
}

}  // namespace ds::kernels
