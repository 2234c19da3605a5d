#include "cuda/layers/layer_step.h"

#include "core/error.h"
#include "cuda/kernels/gemv.h"

namespace ds::gpu {

void LayerStep::linear(const void* x, int64_t ldx, const WeightView& w, int N, int K, void* y, int64_t ldy, int M,
                       bool accumulate, bool out_f32, const void* norm, const int32_t* x_rows) const {
  if (M == 0) return;
  if (M <= kGemvMaxRows) {
    GemvParams g;
    g.x = x;
    g.ldx = ldx;
    g.x_rows = x_rows;
    g.norm_weight = norm;
    g.norm_eps = cfg.rms_norm_eps;
    g.w = w.ptr;
    g.y = y;
    g.ldy = ldy;
    g.y_f32 = out_f32;
    g.N = N;
    g.K = K;
    g.M = M;
    g.num_groups = 1;
    g.epi = accumulate ? GemvEpilogue::Accumulate : GemvEpilogue::Store;
    run_gemv(g, act, ctx);
    return;
  }
  DS_CHECK(!norm && !x_rows, "linear: fused norm / row gather only on the GEMV path");
  GemmArgs a;
  a.x = x;
  a.ldx = ldx;
  a.w = w.ptr;
  a.ldw = K;
  a.y = y;
  a.ldy = ldy;
  a.x_dtype = act;
  a.w_dtype = w.dtype;
  a.y_dtype = out_f32 ? DType::F32 : act;
  a.M = M;
  a.N = N;
  a.K = K;
  a.beta = accumulate ? 1.f : 0.f;
  gemm.run(a, ctx.stream);
}

}  // namespace ds::gpu
