#include "core/parallel.h"
#include "kernels/activation/op.h"
#include "kernels/common/math.h"

namespace ds::kernels {

void run_silu_mul_cpu(const SiluMulParams& p) {
  const int64_t lg = p.ld_gate ? p.ld_gate : p.dim, lu = p.ld_up ? p.ld_up : p.dim,
                ly = p.ld_y ? p.ld_y : p.dim;
  parallel_for(size_t(p.rows), [&](size_t b, size_t e) {
    for (size_t r = b; r < e; ++r) {
      const float* g = p.gate + int64_t(r) * lg;
      const float* u = p.up + int64_t(r) * lu;
      float* y = p.y + int64_t(r) * ly;
      for (int64_t i = 0; i < p.dim; ++i) y[i] = silu(g[i]) * u[i];
    }
  }, 16);
}

}  // namespace ds::kernels
