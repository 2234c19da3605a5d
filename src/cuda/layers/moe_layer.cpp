#include "cuda/layers/moe_layer.h"

#include <string>

#include "core/error.h"
#include "cuda/kernels/elementwise.h"
#include "cuda/kernels/gemv.h"
#include "cuda/kernels/moe_gemm.h"
#include "cuda/kernels/moe_gemm_fp8_wgmma.h"
#include "cuda/kernels/moe_params.h"
#include "cuda/kernels/moe_route.h"
#include "cuda/layers/dense_mlp.h"

namespace ds::gpu {

MoeLayer::MoeLayer(const ModelConfig& c, DType act, const FfnWeights& w, int layer) : w_(w), layer_(layer) {
  const std::string p = "model.layers." + std::to_string(layer) + ".block_sparse_moe.";
  w_.router.require(act, p + "gate.weight");
  w_.experts_gate_up.require(act, p + "experts.*.w1/w3.weight", true);
  w_.experts_down.require(act, p + "experts.*.w2.weight", true);
  DS_CHECK(w_.bias != nullptr, "CUDA model: {}gate.e_score_correction_bias missing", p);
  if (c.moe.num_shared_experts > 0 && !w_.shared_folded) {
    w_.gate_up.require(act, p + "shared_experts.gate_proj/up_proj.weight", true);
    w_.down.require(act, p + "shared_experts.down_proj.weight", true);
  }
}

void MoeLayer::forward(const LayerStep& s, LayerInput in) const {
  const DType act = s.act;
  const auto& f = w_;
  const auto& m = s.m;
  auto& ws = s.ws;
  const auto& mc = s.cfg.moe;
  const int hid = s.cfg.hidden_size, E = mc.num_experts, Ie = mc.intermediate_size;
  const bool fold = f.shared_folded && m.T <= kMoeFoldMaxRows;
  const int kp = mc.top_k + (fold ? 1 : 0);
  // expert parallelism: routing over all E experts, then the pairs of this rank's El experts only
  const bool ep = f.local_experts > 0;
  const int El = ep ? f.local_experts : E;

  MoeRouteParams r;
  r.logits = ws.router;
  r.bias = f.bias;
  r.tokens = m.T;
  r.num_experts = E;
  r.top_k = mc.top_k;
  r.num_groups = mc.num_expert_group;
  r.topk_groups = mc.topk_group;
  r.renormalize = mc.renormalize;
  r.biased_weights = s.biased_moe_weights || mc.biased_weights;
  r.scale = mc.routed_scaling_factor;
  r.topk_ids = ws.topk_ids;
  r.topk_weights = ws.topk_w;
  r.ldk = kp;
  r.shared_expert_id = fold ? E : -1;
  if (s.forced_ids) r.forced_ids = s.forced_ids + int64_t(layer_) * m.T * mc.top_k;
  MoeAlignParams a = moe_align_params(r, MoeAlignBuffers{.pair_pos = ws.pair_pos,
                                                           .sorted_token = ws.sorted_token,
                                                           .active_expert = ws.slot_expert,
                                                           .active_start = ws.slot_start,
                                                           .num_active = ws.num_active,
                                                           .block_offsets = ws.align_blocks,
                                                           .block_offsets_capacity = ws.align_blocks_capacity});
  if (ep) a.num_experts = El;
  // FP8 experts at GEMV-sized batches (from switches.fp8_tile_min_rows tokens): the FP8 wgmma kernel, which
  // reads normalised rows, so the RMSNorm the GEMVs would fuse runs first into ws.x
  const bool fp8_small = act == DType::BF16 && f.experts_gate_up.fp8() && m.T <= kGemvMaxRows &&
                         m.T >= s.ctx.switches.fp8_tile_min_rows;
  if (fp8_small && in.norm) in = LayerInput{s.norm_into_x(in.x, hid, in.norm, m.T, hid), nullptr};
  s.linear(in.x, hid, f.router, E, hid, ws.router, E, m.T, false, true, in.norm);
  if (ep) {  // (no fused or one-token layout: the pairs of other ranks' experts are dropped between)
    run_moe_route(r, s.ctx);
    run_moe_keep_local(ws.topk_ids, m.T, kp, mc.top_k, f.expert_begin, El, s.ctx);
    run_moe_align(a, s.ctx);
  } else {
    run_moe_route_align(r, a, s.ctx);
  }

  bool combined = false;  // the expert outputs are already added into h
  // tensor-core grouped GEMM above the GEMV sizes (bf16 activations): tiles of 16 token rows at decode-sized
  // batches, 64 at prefill. FP8 and INT4 experts at 16-row tiles on Hopper: x split for the FP8 tensor cores
  // (moe_gemm_fp8_wgmma.h); other FP8 launches convert to bf16 in the mma.sync kernels (the wgmma kernel of
  // the 64-row bf16 tiles declines FP8). INT4 experts (switches.int4_tiles) and, with
  // switches.fp8_prefill_tiles, FP8 experts stay on the FP8 wgmma kernel at prefill too, with 64-token tiles
  // where their scale groups allow (switches.xsplit_prefill_tile; the workspace's x split then holds
  // max_tokens rows); INT4 experts the FP8 wgmma kernel cannot take run on the GEMVs.
  MoeGemmParams tgu, tdn;
  bool tiles = act == DType::BF16 && (m.T > kGemvMaxRows || fp8_small);
  if (tiles) {
    // the launch pair at `tile` tokens, with the x split when `split` (the FP8 wgmma kernel's input)
    auto plan = [&](int tile, bool split) {
      tgu = moe_gate_up_gemm_params(a, in.x, hid, f.experts_gate_up.ptr, hid, Ie, ws.act, tile);
      set_gemv_weights(tgu, f.experts_gate_up, 2 * Ie);
      if (split) {
        tgu.x_split = in.split ? const_cast<void*>(in.split) : ws.x_split;  // the norm's split of x, or its own
        tgu.x_split_ready = in.split != nullptr;
        tgu.x_split_rows = m.T;
      }
      tdn = moe_down_gemm_params(tgu, f.experts_down.ptr, ws.moe_out, hid);
      tdn.x_split = split ? ws.x_split : nullptr;
      set_gemv_weights(tdn, f.experts_down, hid);
      if (Ie % 64 != 0) tdn.k_tile = 32;  // narrow experts (a tensor-parallel rank's share of a small model)
      // FP8 experts' prefill tiles on x's e4m3 part alone (W8A8, as the FP8 checkpoints' own recipes quantize
      // activations; the kernel keeps hi + lo for INT4 experts, W4A16: MoeGemmParams::x_hi_only)
      tgu.x_hi_only = tdn.x_hi_only = split && tile == 64 && s.ctx.switches.fp8_prefill_hi;
      return moe_gemm_fp8_wgmma_applies(tgu, s.ctx) && moe_gemm_fp8_wgmma_applies(tdn, s.ctx);
    };
    // prefill-sized steps on the FP8 wgmma kernel: quantized experts the switches put there, when the
    // workspace's x split holds the step's tokens and pairs
    const bool prefill_split = m.T >= 512 &&
                         ((f.experts_gate_up.int4() && s.ctx.switches.int4_tiles) ||
                          (f.experts_gate_up.fp8() && s.ctx.switches.fp8_prefill_tiles)) &&
                         ws.x_split_capacity >= x_split_bytes(m.T, hid) &&
                         ws.x_split_capacity >= x_split_bytes(int64_t(m.T) * kp, Ie);
    // the prefill tile the switch asks for (64 takes groups of 128+ columns only), then 16, then the
    // mma.sync kernels' 64-row tiles (FP8) or the GEMVs (INT4)
    bool wgmma = false;
    if (prefill_split) {
      wgmma = plan(s.ctx.switches.xsplit_prefill_tile, true);
      if (!wgmma && s.ctx.switches.xsplit_prefill_tile != 16) wgmma = plan(16, true);
      if (!wgmma) wgmma = plan(64, false);
    } else {
      wgmma = plan(m.T < 512 ? 16 : 64, m.T < 512);
    }
    if ((tgu.w_int4 && !(s.ctx.switches.int4_tiles && wgmma)) || (fp8_small && !wgmma)) tiles = false;
  }
  if (tiles) {
    run_moe_gemm(tgu, s.ctx);
    run_moe_gemm(tdn, s.ctx);
  } else {
    GemvParams g = moe_gate_up_gemv_params(r, a, in.x, hid, f.experts_gate_up.ptr, hid, Ie, ws.act);
    g.norm_weight = in.norm;  // small batches: the layer's RMSNorm applied as the rows are read
    g.norm_eps = s.cfg.rms_norm_eps;
    set_gemv_weights(g, f.experts_gate_up, 2 * Ie);
    run_gemv(g, act, s.ctx);
    if (m.T == 1 && !ep) {
      // batch 1: down projection and combine in one launch, straight into the residual
      MoeDownCombineParams dc =
          moe_down_combine_params(g, ws.pair_pos, ws.topk_ids, ws.topk_w, kp, f.experts_down.ptr, s.out);
      set_gemv_weights(dc, f.experts_down, hid);
      run_moe_down_combine(dc, act, s.ctx);
      combined = true;
    } else {
      GemvParams dg = moe_down_gemv_params(g, f.experts_down.ptr, ws.moe_out, hid);
      set_gemv_weights(dg, f.experts_down, hid);
      run_gemv(dg, act, s.ctx);
    }
  }

  if (!combined) run_moe_combine(moe_combine_params(r, a, ws.moe_out, s.out, hid), act, s.ctx);

  if (fold || mc.num_shared_experts == 0) return;
  // shared expert(s) as a dense MLP over all tokens
  const WeightView gu = f.shared_folded ? f.experts_gate_up.at(int64_t(E) * 2 * Ie * hid) : f.gate_up;
  const WeightView dn = f.shared_folded ? f.experts_down.at(int64_t(E) * hid * Ie) : f.down;
  run_mlp(s, gu, dn, f.shared_folded ? Ie : f.inter, m.T, in);
}

}  // namespace ds::gpu
