// The FFN layers of the GPU model: the dense SwiGLU MLP and the MoE (spec 6): routing, permutation,
// grouped expert GEMMs (GEMV at decode sizes, tensor cores beyond), weighted combine, shared expert.
#include <algorithm>

#include "core/error.h"
#include "cuda/cuda_model.h"
#include "cuda/kernels/elementwise.h"
#include "cuda/kernels/gemv.h"
#include "cuda/kernels/moe_gemm.h"
#include "cuda/kernels/moe_route.h"
#include "cuda/model_internal.h"

namespace ds::gpu {

// h += down(silu(gate x) * up x) for all T tokens; gate_up holds [gate; up] rows.
void CudaModel::mlp(const void* gate_up, const void* down, int I, int T, Input in) {
  Workspace& ws = *ws_;
  const int hid = cfg_.hidden_size;
  if (T <= kGemvMaxRows) {
    GemvParams g;
    g.x = in.x;
    g.ldx = hid;
    g.norm_weight = in.norm;
    g.norm_eps = cfg_.rms_norm_eps;
    g.w = gate_up;
    g.y = ws.act;
    g.ldy = I;
    g.N = I;
    g.K = hid;
    g.M = T;
    g.epi = GemvEpilogue::SiluMul;
    run_gemv(g, opt_.act, ctx_);
  } else {
    linear(in.x, hid, gate_up, 2 * I, hid, ws.proj, 2 * I, T, false);
    SiluMulParams s;
    s.x = ws.proj;
    s.ldx = 2 * I;
    s.y = ws.act;
    s.ldy = I;
    s.tokens = T;
    s.inter = I;
    run_silu_mul(s, opt_.act, ctx_);
  }
  linear(ws.act, I, down, hid, I, ws.h, hid, T, true);
}

void CudaModel::ffn_dense(int l, const Meta& m, Input in) {
  const auto& f = w_.layers[size_t(l)].ffn;
  mlp(f.gate_up, f.down, f.inter, m.T, in);
}

void CudaModel::ffn_moe(int l, const Meta& m, Input in) {
  const DType act = opt_.act;
  const auto& f = w_.layers[size_t(l)].ffn;
  Workspace& ws = *ws_;
  const auto& mc = cfg_.moe;
  const int hid = cfg_.hidden_size, E = mc.num_experts, Ie = mc.intermediate_size;
  const bool fold = f.shared_folded && m.T <= kGemvMaxRows;
  const int kp = mc.top_k + (fold ? 1 : 0);

  MoeRouteParams r;
  r.logits = ws.router;
  r.bias = f.bias;
  r.tokens = m.T;
  r.num_experts = E;
  r.top_k = mc.top_k;
  r.num_groups = mc.num_expert_group;
  r.topk_groups = mc.topk_group;
  r.renormalize = mc.renormalize;
  r.biased_weights = opt_.biased_moe_weights || mc.biased_weights;
  r.scale = mc.routed_scaling_factor;
  r.topk_ids = ws.topk_ids;
  r.topk_weights = ws.topk_w;
  r.ldk = kp;
  r.shared_expert_id = fold ? E : -1;
  if (!forced_.empty()) r.forced_ids = forced_dev_.as<int32_t>() + int64_t(l) * m.T * mc.top_k;
  MoeAlignParams a;
  a.ids = ws.topk_ids;
  a.tokens = m.T;
  a.k = kp;
  a.num_experts = E + (fold ? 1 : 0);
  a.pair_pos = ws.pair_pos;
  a.sorted_token = ws.sorted_token;
  a.active_expert = ws.slot_expert;
  a.active_start = ws.slot_start;
  a.num_active = ws.num_active;
  linear(in.x, hid, f.router, E, hid, ws.router, E, m.T, false, true, in.norm);
  run_moe_route_align(r, a, ctx_);

  const int slots = std::min(a.num_experts, m.T * kp);
  bool combined = false;  // the expert outputs are already added into h
  if (act == DType::BF16 && m.T > kGemvMaxRows) {
    // tensor-core grouped GEMM: tiles of 16 token rows at decode-sized batches, 64 at prefill
    MoeGemmParams g;
    g.x = in.x;
    g.ldx = hid;
    g.x_rows = ws.sorted_token;
    g.w = f.experts_gate_up;
    g.w_matrix_stride = int64_t(2) * Ie * hid;
    g.y = ws.act;
    g.ldy = Ie;
    g.N = Ie;
    g.K = hid;
    g.silu_mul = true;
    g.active_expert = ws.slot_expert;
    g.active_start = ws.slot_start;
    g.num_active = ws.num_active;
    g.max_active = slots;
    g.max_rows = m.T * kp;
    g.tile_tokens = m.T >= 512 ? 64 : 16;
    run_moe_gemm(g, ctx_);
    run_moe_gemm(moe_down_gemm_params(g, f.experts_down, ws.moe_out, hid), ctx_);
  } else {
    GemvParams g;
    g.x = in.x;
    g.ldx = hid;
    g.norm_weight = in.norm;
    g.norm_eps = cfg_.rms_norm_eps;
    g.x_rows = ws.sorted_token;
    g.w = f.experts_gate_up;
    g.w_matrix_stride = int64_t(2) * Ie * hid;
    g.y = ws.act;
    g.ldy = Ie;
    g.N = Ie;
    g.K = hid;
    g.num_groups = slots;
    g.group_weight = ws.slot_expert;
    g.group_start = ws.slot_start;
    g.num_active = ws.num_active;
    g.max_rows = m.T;  // an expert sees each token at most once
    g.epi = GemvEpilogue::SiluMul;
    if (fold && moe_one_token_layout(r, a)) {  // the shared expert is slot top_k
      g.known_group = mc.top_k;
      g.known_weight = E;
    }
    run_gemv(g, act, ctx_);
    if (m.T == 1) {
      // batch 1: down projection and combine in one launch, straight into the residual
      run_moe_down_combine(
          moe_down_combine_params(g, ws.pair_pos, ws.topk_ids, ws.topk_w, kp, f.experts_down, ws.h), act, ctx_);
      combined = true;
    } else {
      run_gemv(moe_down_gemv_params(g, f.experts_down, ws.moe_out, hid), act, ctx_);
    }
  }

  if (!combined) {
    MoeCombineParams cb;
    cb.expert_out = ws.moe_out;
    cb.pair_pos = ws.pair_pos;
    cb.weights = ws.topk_w;
    cb.residual = ws.h;
    cb.tokens = m.T;
    cb.k = kp;
    cb.dim = hid;
    run_moe_combine(cb, act, ctx_);
  }

  if (fold || mc.num_shared_experts == 0) return;
  // shared expert(s) as a dense MLP over all tokens
  const void* gu = f.shared_folded ? off(f.experts_gate_up, int64_t(E) * 2 * Ie * hid, act) : f.gate_up;
  const void* dn = f.shared_folded ? off(f.experts_down, int64_t(E) * hid * Ie, act) : f.down;
  mlp(gu, dn, f.shared_folded ? Ie : f.inter, m.T, in);
}

}  // namespace ds::gpu
