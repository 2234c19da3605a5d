// The kernels of one forward: embedding, the layer loop, final norm and lm_head, and the projection
// helper (GEMV for small batches, cuBLASLt otherwise). Attention layers: cuda_attention.cpp; FFN:
// cuda_ffn.cpp. Called eagerly or under graph capture, so nothing here allocates, synchronises or
// reads device memory on the host.
#include "core/error.h"
#include "cuda/cuda_model.h"
#include "cuda/kernels/elementwise.h"
#include "cuda/kernels/gemv.h"
#include "cuda/kernels/norm.h"
#include "cuda/model_internal.h"

namespace ds::gpu {

void CudaModel::linear(const void* x, int64_t ldx, const void* w, int N, int K, void* y, int64_t ldy, int M,
                       bool accumulate, bool out_f32, const void* norm, const int32_t* x_rows) {
  if (M == 0) return;
  if (M <= kGemvMaxRows) {
    GemvParams g;
    g.x = x;
    g.ldx = ldx;
    g.x_rows = x_rows;
    g.norm_weight = norm;
    g.norm_eps = cfg_.rms_norm_eps;
    g.w = w;
    g.y = y;
    g.ldy = ldy;
    g.y_f32 = out_f32;
    g.N = N;
    g.K = K;
    g.M = M;
    g.num_groups = 1;
    g.epi = accumulate ? GemvEpilogue::Accumulate : GemvEpilogue::Store;
    run_gemv(g, opt_.act, ctx_);
    return;
  }
  DS_CHECK(!norm && !x_rows, "linear: fused norm / row gather only on the GEMV path");
  GemmArgs a;
  a.x = x;
  a.ldx = ldx;
  a.w = w;
  a.ldw = K;
  a.y = y;
  a.ldy = ldy;
  a.in = opt_.act;
  a.out = out_f32 ? DType::F32 : opt_.act;
  a.M = M;
  a.N = N;
  a.K = K;
  a.beta = accumulate ? 1.f : 0.f;
  gemm_.run(a, stream_);
}

void CudaModel::compute(const Meta& m) {
  const DType act = opt_.act;
  const int hid = cfg_.hidden_size;
  Workspace& ws = *ws_;
  EmbeddingParams e;
  e.ids = m.tokens;
  e.table = w_.embed;
  e.y = ws.h;
  e.tokens = m.T;
  e.dim = hid;
  run_embedding(e, act, ctx_);
  // Small batches: every consumer of a norm's output is a GEMV that normalises h itself as it loads
  // it (GemvParams::norm_weight), so no norm kernel runs. Larger ones normalise h into ws.x first.
  const bool fused = m.T <= kGemvMaxRows;
  auto norm = [&](const void* weight) -> Input {
    if (fused) return Input{ws.h, weight};
    RmsNormParams n;
    n.x = ws.h;
    n.ldx = hid;
    n.weight = weight;
    n.y = ws.x;
    n.ldy = hid;
    n.rows = m.T;
    n.dim = hid;
    n.eps = cfg_.rms_norm_eps;
    run_rmsnorm(n, act, ctx_);
    return Input{ws.x, nullptr};
  };
  for (int l = 0; l < cfg_.num_layers; ++l) {
    const auto& L = w_.layers[size_t(l)];
    Input in = norm(L.input_norm);
    if (cfg_.is_kda(l)) layer_kda(l, m, in);
    else layer_mla(l, m, in);
    in = norm(L.post_norm);
    if (cfg_.is_moe(l)) ffn_moe(l, m, in);
    else ffn_dense(l, m, in);
  }
  if (m.R == 0) return;
  float* out = logits_.as<float>() + int64_t(m.row0) * cfg_.vocab_size;
  if (m.R <= kGemvMaxRows) {  // final norm fused into the lm_head GEMV, rows gathered by it
    linear(ws.h, hid, w_.lm_head, cfg_.vocab_size, hid, out, cfg_.vocab_size, m.R, false, true, w_.final_norm,
           m.logit_rows);
    return;
  }
  RmsNormParams n;
  n.x = ws.h;
  n.ldx = hid;
  n.row_index = m.logit_rows;
  n.weight = w_.final_norm;
  n.y = ws.rows_x;
  n.ldy = hid;
  n.rows = m.R;
  n.dim = hid;
  n.eps = cfg_.rms_norm_eps;
  run_rmsnorm(n, act, ctx_);
  linear(ws.rows_x, hid, w_.lm_head, cfg_.vocab_size, hid, out, cfg_.vocab_size, m.R, false, true);
}

}  // namespace ds::gpu
