#include "cuda/layers/mla_layer.h"

#include <cmath>
#include <string>

#include "core/error.h"
#include "cuda/kernels/attn_ref.h"
#include "cuda/kernels/elementwise.h"
#include "cuda/kernels/gemv.h"
#include "cuda/kernels/latent_cache.h"
#include "cuda/kernels/mla_decode.h"

namespace ds::gpu {

MlaLayer::MlaLayer(const ModelConfig& c, DType act, const MlaLayerWeights& w, int layer, int mla_index)
    : w_(w), index_(mla_index) {
  const auto& m = c.mla;
  hid_ = c.hidden_size;
  Hm_ = m.num_heads;
  R_ = m.kv_lora_rank;
  dn_ = m.qk_nope_head_dim;
  dr_ = m.qk_rope_head_dim;
  dv_ = m.v_head_dim;
  dq_ = dn_ + dr_;
  PM_ = Hm_ * dq_ + R_ + dr_;
  scale_ = 1.f / std::sqrt(float(dq_));
  const std::string p = "model.layers." + std::to_string(layer) + ".self_attn.";
  w_.in_proj.require(act, p + "q_proj/kv_a_proj_with_mqa.weight", true);
  w_.kv_a_norm.require(act, p + "kv_a_layernorm.weight");
  w_.kv_b.require(act, p + "kv_b_proj.weight");
  w_.w_uk_t.require(act, p + "kv_b_proj.weight (W_UK transposed)");
  w_.o_proj.require(act, p + "o_proj.weight", true);
}

void MlaLayer::forward(const LayerStep& s, LayerInput in) const {
  const DType act = s.act;
  const auto& m = s.m;
  auto& ws = s.ws;
  void* cache = s.caches.mla_layer(index_);
  s.linear(in.x, hid_, w_.in_proj, PM_, hid_, ws.proj, PM_, m.T, false, false, in.norm, nullptr, in.split);

  LatentCacheWriteParams cw;
  cw.kv_a = off(ws.proj, int64_t(Hm_) * dq_, act);
  cw.ld_kv_a = PM_;
  cw.norm_weight = w_.kv_a_norm.ptr;
  cw.cache = cache;
  cw.cache_rows = m.slot_mapping;
  cw.tokens = m.T;
  cw.R = R_;
  cw.Dr = dr_;
  cw.eps = s.cfg.kv_a_norm_eps;
  cw.fp8_row_bytes = s.caches.latent_fp8_row_bytes();
  run_latent_cache_write(cw, act, s.ctx);

  if (s.reference_attention) {
    reference_rows(s, cache);
  } else {
    if (m.n_dec > 0) decode_rows(s, cache);
    if (m.T > m.n_dec) prefill_rows(s, cache);
  }
  s.linear(ws.attn_o, int64_t(Hm_) * dv_, w_.o_proj, hid_, Hm_ * dv_, s.out, hid_, m.T, true);
}

void MlaLayer::absorb_queries(const LayerStep& s, int M, void* y, int64_t ld_y, int64_t hs_y) const {
  if (M <= kGemvMaxRows) {  // one GEMV over the heads with the transposed copy W_UK^h^T [R, dn]
    GemvParams g;
    g.x = s.ws.proj;
    g.ldx = PM_;
    g.x_group_stride = dq_;
    g.w = w_.w_uk_t.ptr;
    g.w_matrix_stride = int64_t(R_) * dn_;
    g.y = y;
    g.ldy = ld_y;
    g.y_group_stride = hs_y;
    g.N = R_;
    g.K = dn_;
    g.M = M;
    g.num_groups = Hm_;
    run_gemv(g, s.act, s.ctx);
    return;
  }
  GemmArgs a;  // W_UK^h = kv_b rows [h(dn+dv), h(dn+dv)+dn): a [dn, R] matrix, i.e. [K, N]
  a.x = s.ws.proj;
  a.ldx = PM_;
  a.stride_x = dq_;
  a.w = w_.kv_b.ptr;
  a.w_kn = true;
  a.ldw = R_;
  a.stride_w = int64_t(dn_ + dv_) * R_;
  a.y = y;
  a.ldy = ld_y;
  a.stride_y = hs_y;
  a.x_dtype = a.y_dtype = s.act;
  a.w_dtype = w_.kv_b.dtype;
  a.M = M;
  a.N = R_;
  a.K = dn_;
  a.batch = Hm_;
  s.gemm.run(a, s.ctx.stream);
}

// W_UV^h = kv_b rows [h(dn+dv)+dn, (h+1)(dn+dv)).
void MlaLayer::unabsorb_values(const LayerStep& s, int M) const {
  const WeightView w_uv = w_.kv_b.at(int64_t(dn_) * R_);
  if (M <= kGemvMaxRows) {  // one GEMV over the heads: W_UV^h rows are [dv, R], K contiguous
    GemvParams g;
    g.x = s.ws.o_lat;
    g.ldx = int64_t(Hm_) * R_;
    g.x_group_stride = R_;
    g.w = w_uv.ptr;
    g.w_matrix_stride = int64_t(dn_ + dv_) * R_;
    g.y = s.ws.attn_o;
    g.ldy = int64_t(Hm_) * dv_;
    g.y_group_stride = dv_;
    g.N = dv_;
    g.K = R_;
    g.M = M;
    g.num_groups = Hm_;
    run_gemv(g, s.act, s.ctx);
    return;
  }
  GemmArgs b;
  b.x = s.ws.o_lat;
  b.ldx = int64_t(Hm_) * R_;
  b.stride_x = R_;
  b.w = w_uv.ptr;
  b.ldw = R_;
  b.stride_w = int64_t(dn_ + dv_) * R_;
  b.y = s.ws.attn_o;
  b.ldy = int64_t(Hm_) * dv_;
  b.stride_y = dv_;
  b.x_dtype = b.y_dtype = s.act;
  b.w_dtype = w_uv.dtype;
  b.M = M;
  b.N = dv_;
  b.K = R_;
  b.batch = Hm_;
  s.gemm.run(b, s.ctx.stream);
}

// All tokens through the simple absorbed kernel (attn_ref.h).
void MlaLayer::reference_rows(const LayerStep& s, void* cache) const {
  const auto& m = s.m;
  DS_CHECK(s.caches.latent_fp8_row_bytes() == 0,
           "the reference attention kernels read the MLA cache in the activation dtype only "
           "(not --kv-cache-dtype fp8)");
  absorb_queries(s, m.T, s.ws.q_abs, int64_t(Hm_) * R_, R_);
  MlaRefParams r;
  r.q_lat = s.ws.q_abs;
  r.ld_lat = int64_t(Hm_) * R_;
  r.head_stride_lat = R_;
  r.q_pe = off(s.ws.proj, dn_, s.act);
  r.ld_pe = PM_;
  r.head_stride_pe = dq_;
  r.cache = cache;
  r.block_tables = m.block_tables;
  r.token_seq = m.token_seq;
  r.token_pos = m.token_pos;
  r.o = s.ws.o_lat;
  r.ldo = int64_t(Hm_) * R_;
  r.tokens = m.T;
  r.heads = Hm_;
  r.Dl = R_;
  r.Dr = dr_;
  r.block_size = s.caches.block_size();
  r.max_blocks = m.stride;
  r.scale = scale_;
  run_mla_ref(r, s.act, s.ctx);
  unabsorb_values(s, m.T);
}

// Decode rows [0, n_dec): absorbed queries [q_lat ; q_pe] per head, split-K attention over the cache.
void MlaLayer::decode_rows(const LayerStep& s, void* cache) const {
  const DType act = s.act;
  const auto& m = s.m;
  const int D = R_ + dr_;
  absorb_queries(s, m.n_dec, s.ws.q_abs, int64_t(Hm_) * D, D);
  CopyStridedParams cp;  // q_pe of every head behind its q_lat
  cp.src = off(s.ws.proj, dn_, act);
  cp.ld_src = PM_;
  cp.hs_src = dq_;
  cp.dst = off(s.ws.q_abs, R_, act);
  cp.ld_dst = int64_t(Hm_) * D;
  cp.hs_dst = D;
  cp.rows = m.n_dec;
  cp.heads = Hm_;
  cp.width = dr_;
  run_copy_strided(cp, act, s.ctx);
  MlaDecodeParams d;
  d.q = s.ws.q_abs;
  d.ldq = int64_t(Hm_) * D;
  d.cache = cache;
  d.block_tables = m.block_tables;
  d.context_lens = m.seq_lens;
  d.o = s.ws.o_lat;
  d.ldo = int64_t(Hm_) * R_;
  d.workspace = s.ws.mla_ws;
  d.rows = m.n_dec;
  d.num_heads = Hm_;
  d.block_size = s.caches.block_size();
  d.max_blocks = m.stride;
  d.num_splits = m.mla_splits;
  d.kv_lora_rank = R_;
  d.rope_dim = dr_;
  d.scale = scale_;
  d.fp8_cache = s.caches.latent_fp8_row_bytes() > 0;
  d.warps = s.ctx.switches.mla_decode_warps;
  d.ctas_per_sm = s.ctx.switches.mla_decode_ctas;
  d.wgmma = s.ctx.switches.mla_decode_wgmma > 0;
  d.wgmma_pipe = m.mla_pipe;
  d.f8_mma = s.ctx.switches.mla_decode_f8mma;
  run_mla_decode(d, act, s.ctx);
  unabsorb_values(s, m.n_dec);
}

}  // namespace ds::gpu
