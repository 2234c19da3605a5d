// The attention layers of the GPU model: KDA (spec 4) and NoPE MLA (spec 5; absorbed decode over the
// paged latent cache, expanded keys for prefill chunks). Called eagerly or under graph capture.
#include <cmath>

#include "core/error.h"
#include "cuda/cuda_model.h"
#include "cuda/kernels/attn_ref.h"
#include "cuda/kernels/conv1d.h"
#include "cuda/kernels/delta_gate.h"
#include "cuda/kernels/elementwise.h"
#include "cuda/kernels/gemv.h"
#include "cuda/kernels/kda_decode.h"
#include "cuda/kernels/kda_prefill.h"
#include "cuda/kernels/latent_cache.h"
#include "cuda/kernels/mla_decode.h"
#include "cuda/kernels/mla_prefill.h"
#include "cuda/kernels/norm.h"
#include "cuda/model_internal.h"

namespace ds::gpu {

void CudaModel::layer_kda(int l, const Meta& m, Input in) {
  const DType act = opt_.act;
  const auto& W = w_.layers[size_t(l)].kda;
  Workspace& ws = *ws_;
  const int hid = cfg_.hidden_size, H = cfg_.kda.num_heads, K = cfg_.kda.head_dim, HK = H * K;
  const int Wc = cfg_.kda.conv_kernel;
  const int P = int(kda_in_proj_rows(cfg_));
  const int li = cfg_.attn_index(l);
  linear(in.x, hid, W.in_proj, P, hid, ws.proj, P, m.T, false, false, in.norm);
  // f_b(f_a x) and g_b(g_a x) as one batch of two (the weights are adjacent, as are the outputs)
  DS_CHECK(W.g_b == off(W.f_b, int64_t(HK) * K, act), "KDA f_b/g_b weights must be adjacent");
  if (m.T <= kGemvMaxRows) {
    GemvParams g;
    g.x = off(ws.proj, 3 * HK, act);
    g.ldx = P;
    g.x_group_stride = K;
    g.w = W.f_b;
    g.w_matrix_stride = int64_t(HK) * K;
    g.y = ws.fg;
    g.ldy = HK;
    g.y_group_stride = int64_t(ws.tokens) * HK;
    g.N = HK;
    g.K = K;
    g.M = m.T;
    g.num_groups = 2;
    run_gemv(g, act, ctx_);
  } else {
    GemmArgs a;
    a.x = off(ws.proj, 3 * HK, act);
    a.ldx = P;
    a.stride_x = K;
    a.w = W.f_b;
    a.ldw = K;
    a.stride_w = int64_t(HK) * K;
    a.y = ws.fg;
    a.ldy = HK;
    a.stride_y = int64_t(ws.tokens) * HK;
    a.in = a.out = act;
    a.M = m.T;
    a.N = HK;
    a.K = K;
    a.batch = 2;
    gemm_.run(a, stream_);
  }

  KdaGateParams g;
  g.f = ws.fg;
  g.ldf = HK;
  g.b = off(ws.proj, 3 * HK + 2 * K, act);
  g.ldb = P;
  g.A_log = W.a_log;
  g.dt_bias = W.dt_bias;
  g.g = ws.g32;
  g.beta = ws.beta;
  g.tokens = m.T;
  g.heads = H;
  g.head_dim = K;

  const int64_t conv_slot = (int64_t((Wc - 1) * 3 * HK) * int64_t(dtype_size(act)) + 15) / 16 * 16;
  Conv1dParams c;
  c.x = ws.proj;
  c.ldx = P;
  c.weight = W.conv;
  c.y = ws.qkv;
  c.state = static_cast<char*>(conv_state_.data()) + int64_t(li) * conv_slot * (opt_.max_num_seqs + 1);
  c.seq_start = m.cu_seqlens;
  c.token_seq = m.token_seq;
  c.slots = m.slots;
  c.num_seqs = m.N;
  c.tokens = m.T;
  c.channels = 3 * HK;
  c.kernel = Wc;
  // the state of a slot is [W-1, 3HK] elements; slots are conv_slot bytes apart
  DS_CHECK(conv_slot == int64_t((Wc - 1) * 3 * HK) * int64_t(dtype_size(act)),
           "conv state slot size must be a multiple of 16 bytes");
  // decode steps: the KDA decode kernel runs the gate and the convolution itself (fused prologue)
  const bool fused_decode = m.pure_decode && !opt_.reference_attention;
  if (m.pure_decode && !fused_decode) {
    run_kda_gate_and_conv_decode(g, c, act, ctx_);
  } else if (!m.pure_decode) {
    run_kda_gate(g, act, ctx_);
    run_conv1d_prefill(c, act, ctx_);
  }

  float* pool = kda_state_.as<float>() + int64_t(li) * (opt_.max_num_seqs + 1) * H * K * K;
  // the inputs, outputs and state slots that the decode and prefill kernels share (same field names)
  auto set_io = [&](auto& k) {
    k.q = ws.qkv;
    k.k = off(ws.qkv, HK, act);
    k.v = off(ws.qkv, 2 * HK, act);
    k.ldq = k.ldk = k.ldv = 3 * HK;
    k.g = ws.g32;
    k.beta = ws.beta;
    k.o = ws.attn_o;
    k.ldo = HK;
    k.state_pool = pool;
    k.state_slots = m.slots;
    k.fresh = m.fresh;
    k.num_seqs = m.N;
    k.num_heads = H;
    k.head_dim = K;
  };
  if (opt_.reference_attention) {
    KdaRefParams k;
    k.q = ws.qkv;
    k.k = off(ws.qkv, HK, act);
    k.v = off(ws.qkv, 2 * HK, act);
    k.ldq = k.ldk = k.ldv = 3 * HK;
    k.g = ws.g32;
    k.beta = ws.beta;
    k.o = ws.attn_o;
    k.state = pool;
    k.cu_seqlens = m.cu_seqlens;
    k.slots = m.slots;
    k.num_seqs = m.N;
    k.heads = H;
    k.head_dim = K;
    run_kda_ref(k, act, ctx_);
  } else if (m.pure_decode) {
    KdaDecodeParams k;
    set_io(k);
    k.fuse_conv = k.fuse_gate = true;
    k.conv = c;
    k.gate = g;
    run_kda_decode(k, act, ctx_);
  } else {
    KdaPrefillParams k;
    set_io(k);
    k.cu_seqlens = m.cu_seqlens;
    k.workspace = ws.kda_ws;
    k.total_tokens = m.T;
    run_kda_prefill(k, act, ctx_);
  }

  if (m.T <= kGemvMaxRows) {  // the output norm runs inside o_proj's GEMV as it loads its rows
    GemvParams o;
    o.x = ws.attn_o;
    o.ldx = HK;
    o.gate = ws.gg;
    o.ld_gate = HK;
    o.gate_head_dim = K;
    o.norm_weight = W.o_norm;
    o.norm_eps = cfg_.rms_norm_eps;
    o.w = W.o_proj;
    o.y = ws.h;
    o.ldy = hid;
    o.N = hid;
    o.K = HK;
    o.M = m.T;
    o.epi = GemvEpilogue::Accumulate;
    run_gemv(o, act, ctx_);
    return;
  }
  GatedRmsNormParams gn;
  gn.o = ws.attn_o;
  gn.gate = ws.gg;
  gn.ldg = HK;
  gn.weight = W.o_norm;
  gn.y = ws.gated;
  gn.tokens = m.T;
  gn.heads = H;
  gn.head_dim = K;
  gn.eps = cfg_.rms_norm_eps;
  run_gated_rmsnorm(gn, act, ctx_);
  linear(ws.gated, HK, W.o_proj, hid, HK, ws.h, hid, m.T, true);
}

void CudaModel::layer_mla(int l, const Meta& m, Input in) {
  const DType act = opt_.act;
  const auto& W = w_.layers[size_t(l)].mla;
  Workspace& ws = *ws_;
  const auto& c = cfg_.mla;
  const int hid = cfg_.hidden_size, Hm = c.num_heads, R = c.kv_lora_rank, dn = c.qk_nope_head_dim,
            dr = c.qk_rope_head_dim, dv = c.v_head_dim, dq = dn + dr;
  const int PM = Hm * dq + R + dr;
  const int li = cfg_.attn_index(l);
  void* cache = off(mla_cache_.data(), int64_t(li) * (num_blocks_ + 1) * opt_.block_size * (R + dr), act);
  linear(in.x, hid, W.in_proj, PM, hid, ws.proj, PM, m.T, false, false, in.norm);

  LatentCacheWriteParams cw;
  cw.kv_a = off(ws.proj, int64_t(Hm) * dq, act);
  cw.ld_kv_a = PM;
  cw.norm_weight = W.kv_a_norm;
  cw.cache = cache;
  cw.cache_rows = m.slot_mapping;
  cw.tokens = m.T;
  cw.R = R;
  cw.Dr = dr;
  cw.eps = cfg_.kv_a_norm_eps;
  run_latent_cache_write(cw, act, ctx_);

  if (opt_.reference_attention) {
    mla_reference(l, m, cache);
  } else {
    if (m.n_dec > 0) mla_decode_rows(l, m, cache);
    if (m.T > m.n_dec) mla_prefill_rows(l, m, cache);
  }
  linear(ws.attn_o, int64_t(Hm) * dv, W.o_proj, hid, Hm * dv, ws.h, hid, m.T, true);
}

// q_lat[t, h] = W_UK^h^T q_nope[t, h] for rows [0, M), written with row stride ld_y and head stride hs_y.
void CudaModel::absorb_queries(int l, int M, void* y, int64_t ld_y, int64_t hs_y) {
  const auto& c = cfg_.mla;
  const int Hm = c.num_heads, R = c.kv_lora_rank, dn = c.qk_nope_head_dim, dv = c.v_head_dim;
  const int dq = c.qk_head_dim(), PM = Hm * dq + R + c.qk_rope_head_dim;
  if (M <= kGemvMaxRows) {  // one GEMV over the heads with the transposed copy W_UK^h^T [R, dn]
    GemvParams g;
    g.x = ws_->proj;
    g.ldx = PM;
    g.x_group_stride = dq;
    g.w = w_.layers[size_t(l)].mla.w_uk_t;
    g.w_matrix_stride = int64_t(R) * dn;
    g.y = y;
    g.ldy = ld_y;
    g.y_group_stride = hs_y;
    g.N = R;
    g.K = dn;
    g.M = M;
    g.num_groups = Hm;
    run_gemv(g, opt_.act, ctx_);
    return;
  }
  GemmArgs a;  // W_UK^h = kv_b rows [h(dn+dv), h(dn+dv)+dn): a [dn, R] matrix, i.e. [K, N]
  a.x = ws_->proj;
  a.ldx = PM;
  a.stride_x = dq;
  a.w = w_.layers[size_t(l)].mla.kv_b;
  a.w_kn = true;
  a.ldw = R;
  a.stride_w = int64_t(dn + dv) * R;
  a.y = y;
  a.ldy = ld_y;
  a.stride_y = hs_y;
  a.in = a.out = opt_.act;
  a.M = M;
  a.N = R;
  a.K = dn;
  a.batch = Hm;
  gemm_.run(a, stream_);
}

// out[t, h] = W_UV^h o_lat[t, h] for rows [0, M) into attn_o (W_UV^h = kv_b rows [h(dn+dv)+dn, (h+1)(dn+dv))).
void CudaModel::unabsorb_values(int l, int M) {
  const auto& c = cfg_.mla;
  const int Hm = c.num_heads, R = c.kv_lora_rank, dn = c.qk_nope_head_dim, dv = c.v_head_dim;
  if (M <= kGemvMaxRows) {  // one GEMV over the heads: W_UV^h rows are [dv, R], K contiguous
    GemvParams g;
    g.x = ws_->o_lat;
    g.ldx = int64_t(Hm) * R;
    g.x_group_stride = R;
    g.w = off(w_.layers[size_t(l)].mla.kv_b, int64_t(dn) * R, opt_.act);
    g.w_matrix_stride = int64_t(dn + dv) * R;
    g.y = ws_->attn_o;
    g.ldy = int64_t(Hm) * dv;
    g.y_group_stride = dv;
    g.N = dv;
    g.K = R;
    g.M = M;
    g.num_groups = Hm;
    run_gemv(g, opt_.act, ctx_);
    return;
  }
  GemmArgs b;
  b.x = ws_->o_lat;
  b.ldx = int64_t(Hm) * R;
  b.stride_x = R;
  b.w = off(w_.layers[size_t(l)].mla.kv_b, int64_t(dn) * R, opt_.act);
  b.ldw = R;
  b.stride_w = int64_t(dn + dv) * R;
  b.y = ws_->attn_o;
  b.ldy = int64_t(Hm) * dv;
  b.stride_y = dv;
  b.in = b.out = opt_.act;
  b.M = M;
  b.N = dv;
  b.K = R;
  b.batch = Hm;
  gemm_.run(b, stream_);
}

// All tokens through the simple absorbed kernel (attn_ref.h).
void CudaModel::mla_reference(int l, const Meta& m, void* cache) {
  const DType act = opt_.act;
  const auto& c = cfg_.mla;
  const int Hm = c.num_heads, R = c.kv_lora_rank, dr = c.qk_rope_head_dim, dq = c.qk_head_dim();
  const int PM = Hm * dq + R + dr;
  absorb_queries(l, m.T, ws_->q_abs, int64_t(Hm) * R, R);
  MlaRefParams r;
  r.q_lat = ws_->q_abs;
  r.ld_lat = int64_t(Hm) * R;
  r.head_stride_lat = R;
  r.q_pe = off(ws_->proj, c.qk_nope_head_dim, act);
  r.ld_pe = PM;
  r.head_stride_pe = dq;
  r.cache = cache;
  r.block_tables = m.block_tables;
  r.token_seq = m.token_seq;
  r.token_pos = m.token_pos;
  r.o = ws_->o_lat;
  r.ldo = int64_t(Hm) * R;
  r.tokens = m.T;
  r.heads = Hm;
  r.Dl = R;
  r.Dr = dr;
  r.block_size = opt_.block_size;
  r.max_blocks = m.stride;
  r.scale = 1.f / std::sqrt(float(dq));
  run_mla_ref(r, act, ctx_);
  unabsorb_values(l, m.T);
}

// Decode rows [0, n_dec): absorbed queries [q_lat ; q_pe] per head, split-K attention over the cache.
void CudaModel::mla_decode_rows(int l, const Meta& m, void* cache) {
  const DType act = opt_.act;
  const auto& c = cfg_.mla;
  const int Hm = c.num_heads, R = c.kv_lora_rank, dr = c.qk_rope_head_dim, dq = c.qk_head_dim();
  const int D = R + dr, PM = Hm * dq + R + dr;
  absorb_queries(l, m.n_dec, ws_->q_abs, int64_t(Hm) * D, D);
  CopyStridedParams cp;  // q_pe of every head behind its q_lat
  cp.src = off(ws_->proj, c.qk_nope_head_dim, act);
  cp.ld_src = PM;
  cp.hs_src = dq;
  cp.dst = off(ws_->q_abs, R, act);
  cp.ld_dst = int64_t(Hm) * D;
  cp.hs_dst = D;
  cp.rows = m.n_dec;
  cp.heads = Hm;
  cp.width = dr;
  run_copy_strided(cp, act, ctx_);
  MlaDecodeParams d;
  d.q = ws_->q_abs;
  d.ldq = int64_t(Hm) * D;
  d.cache = cache;
  d.block_tables = m.block_tables;
  d.context_lens = m.seq_lens;
  d.o = ws_->o_lat;
  d.ldo = int64_t(Hm) * R;
  d.workspace = ws_->mla_ws;
  d.rows = m.n_dec;
  d.num_heads = Hm;
  d.block_size = opt_.block_size;
  d.max_blocks = m.stride;
  d.num_splits = m.mla_splits;
  d.kv_lora_rank = R;
  d.rope_dim = dr;
  d.scale = 1.f / std::sqrt(float(dq));
  run_mla_decode(d, act, ctx_);
  unabsorb_values(l, m.n_dec);
}

// Prefill rows [n_dec, T): the chunk's queries attend to its sequence's expanded keys/values, all
// positions [0, ctx + n) gathered from the paged cache and expanded through kv_b_proj.
void CudaModel::mla_prefill_rows(int l, const Meta& m, void* cache) {
  const DType act = opt_.act;
  const auto& c = cfg_.mla;
  const int Hm = c.num_heads, R = c.kv_lora_rank, dr = c.qk_rope_head_dim, dq = c.qk_head_dim();
  const int dn = c.qk_nope_head_dim, dv = c.v_head_dim, D = R + dr, PM = Hm * dq + R + dr;
  CopyStridedParams g;
  g.src = cache;
  g.ld_src = D;
  g.row_index = m.key_rows;
  g.dst = expand_lat_.data();
  g.ld_dst = D;
  g.rows = m.Tk;
  g.width = D;
  run_copy_strided(g, act, ctx_);
  GemmArgs e;  // [Tk, R] . kv_b^T -> [Tk, Hm (dn + dv)]
  e.x = expand_lat_.data();
  e.ldx = D;
  e.w = w_.layers[size_t(l)].mla.kv_b;
  e.ldw = R;
  e.y = expand_kv_.data();
  e.ldy = int64_t(Hm) * (dn + dv);
  e.in = e.out = act;
  e.M = m.Tk;
  e.N = Hm * (dn + dv);
  e.K = R;
  gemm_.run(e, stream_);
  MlaPrefillParams p;
  p.q = off(ws_->proj, int64_t(m.n_dec) * PM, act);
  p.ldq = PM;
  p.hq = dq;
  p.k_nope = expand_kv_.data();
  p.ldkn = int64_t(Hm) * (dn + dv);
  p.hkn = dn + dv;
  p.k_pe = off(expand_lat_.data(), R, act);
  p.ldkpe = D;
  p.v = off(expand_kv_.data(), dn, act);
  p.ldv = int64_t(Hm) * (dn + dv);
  p.hv = dn + dv;
  p.o = off(ws_->attn_o, int64_t(m.n_dec) * Hm * dv, act);
  p.ldo = int64_t(Hm) * dv;
  p.cu_seqlens_q = m.pre_cu_q;
  p.cu_seqlens_k = m.pre_cu_k;
  p.num_seqs = m.N - m.n_dec;
  p.num_heads = Hm;
  p.max_seqlen_q = m.max_q_len;
  p.scale = 1.f / std::sqrt(float(dq));
  run_mla_prefill(p, act, ctx_);
}

}  // namespace ds::gpu
