// MlaLayer's prefill rows [n_dec, T) (issue 13: any context in a fixed workspace). Each chunk's
// queries attend to its sequence's keys/values, positions [0, ctx + n), expanded from the paged latent
// cache through kv_b_proj into the expansion (MlaExpansion, key_rows rows, sized at start-up):
//  - sequences whose keys fit the expansion together run as one group: their latents gathered through
//    the block tables, one expansion GEMM, one varlen attention launch (the usual case);
//  - a sequence whose keys alone exceed it runs piece by piece: for each piece of key_rows positions,
//    gather, expand, attend with the key window [a, b) (mla_prefill.h) giving the piece's normalised
//    output and log-sum-exp, and merge it into a running fp32 accumulator (mla_merge.h); the last merge
//    writes the chunk's output where o_proj reads it. The chunk's own keys are the last piece(s), causal.
// The merge is exact (the result equals unpieced attention up to rounding: fp32 accumulation, and in
// bf16 one rounding of each piece's output). Why expanded pieces and not the absorbed (latent) form for
// the cached context: docs/GPU_MODEL.md ("Long contexts").
#include <algorithm>

#include "core/error.h"
#include "cuda/kernels/latent_cache.h"
#include "cuda/kernels/mla_merge.h"
#include "cuda/kernels/mla_prefill.h"
#include "cuda/layers/mla_layer.h"

namespace ds::gpu {

std::vector<StepMeta::PrefillGroup> plan_mla_prefill(const std::vector<int32_t>& pre_cu_q,
                                                     const std::vector<int32_t>& pre_cu_k, int piece_keys) {
  DS_CHECK(piece_keys > 0, "MLA prefill plan: the expansion holds no key rows");
  DS_CHECK(pre_cu_q.size() == pre_cu_k.size(), "MLA prefill plan: {} query offsets but {} key offsets",
           pre_cu_q.size(), pre_cu_k.size());
  std::vector<StepMeta::PrefillGroup> out;
  bool open = false;  // the last group takes more sequences
  for (int i = 0; i + 1 < int(pre_cu_k.size()); ++i) {
    const int k0 = pre_cu_k[size_t(i)], k1 = pre_cu_k[size_t(i) + 1];
    StepMeta::PrefillGroup g{i, i + 1, k0, k1 - k0};
    if (k1 - k0 > piece_keys) {  // alone, piece by piece
      g.q0 = pre_cu_q[size_t(i)];
      g.q_len = pre_cu_q[size_t(i) + 1] - g.q0;
      g.pieces = true;
      out.push_back(g);
      open = false;
    } else if (open && out.back().keys + g.keys <= piece_keys) {
      out.back().seq1 = i + 1;
      out.back().keys += g.keys;
    } else {
      out.push_back(g);
      open = true;
    }
  }
  return out;
}

void MlaLayer::prefill_rows(const LayerStep& s, void* cache) const {
  for (const auto& grp : s.m.prefill_groups) {
    if (grp.pieces) prefill_pieces(s, cache, grp);
    else prefill_group(s, cache, grp);
  }
}

void MlaLayer::expand_keys(const LayerStep& s, int rows) const {
  GemmArgs e;  // [rows, R] . kv_b^T -> [rows, Hm (dn + dv)]
  e.x = s.expand.lat;
  e.ldx = R_ + dr_;
  e.w = w_.kv_b.ptr;
  e.ldw = R_;
  e.y = s.expand.kv;
  e.ldy = int64_t(Hm_) * (dn_ + dv_);
  e.x_dtype = e.y_dtype = s.act;
  e.w_dtype = w_.kv_b.dtype;
  e.M = mla_expand_gemm_rows(rows, s.expand.key_rows);  // a warmed-up shape (rows past `rows` unread)
  e.N = Hm_ * (dn_ + dv_);
  e.K = R_;
  s.gemm.run(e, s.ctx.stream);
}

// Key row k of pre_cu_k's numbering lives at expansion row k - key0: the bases shift back by key0
// (the kernel reads only rows inside its sequences' windows). The output goes to attn_o's prefill rows.
void MlaLayer::attend(const LayerStep& s, int seq0, int num_seqs, int key0, int max_q, int k_begin, int k_end,
                      float* lse) const {
  const DType act = s.act;
  const auto& m = s.m;
  const MlaExpansion& x = s.expand;
  const int D = R_ + dr_;
  const int64_t shift = -int64_t(key0), kv_w = int64_t(Hm_) * (dn_ + dv_);
  MlaPrefillParams p;
  p.q = off(s.ws.proj, int64_t(m.n_dec) * PM_, act);
  p.ldq = PM_;
  p.hq = dq_;
  p.k_nope = off(x.kv, shift * kv_w, act);
  p.ldkn = kv_w;
  p.hkn = dn_ + dv_;
  p.k_pe = off(x.lat, shift * D + R_, act);
  p.ldkpe = D;
  p.v = off(x.kv, shift * kv_w + dn_, act);
  p.ldv = kv_w;
  p.hv = dn_ + dv_;
  p.o = off(s.ws.attn_o, int64_t(m.n_dec) * Hm_ * dv_, act);
  p.ldo = int64_t(Hm_) * dv_;
  p.cu_seqlens_q = m.pre_cu_q + seq0;
  p.cu_seqlens_k = m.pre_cu_k + seq0;
  p.num_seqs = num_seqs;
  p.num_heads = Hm_;
  p.max_seqlen_q = max_q;
  p.scale = scale_;
  p.k_begin = k_begin;
  p.k_end = k_end;
  p.lse = lse;
  p.ld_lse = Hm_;
  run_mla_prefill(p, act, s.ctx);
}

// Sequences [seq0, seq1) whose keys fit the expansion together: one gather, one GEMM, one launch.
void MlaLayer::prefill_group(const LayerStep& s, void* cache, const StepMeta::PrefillGroup& grp) const {
  const auto& m = s.m;
  LatentGatherParams g;
  g.cache = cache;
  g.block_tables = m.block_tables + int64_t(m.n_dec + grp.seq0) * m.stride;
  g.bt_stride = m.stride;
  g.block_size = s.caches.block_size();
  g.cu_rows = m.pre_cu_k + grp.seq0;
  g.num_seqs = grp.seq1 - grp.seq0;
  g.row0 = grp.key0;
  g.dst = s.expand.lat;
  g.rows = grp.keys;
  g.D = R_ + dr_;
  g.fp8_row_bytes = s.caches.latent_fp8_row_bytes();
  run_latent_gather(g, s.act, s.ctx);
  expand_keys(s, grp.keys);
  attend(s, grp.seq0, grp.seq1 - grp.seq0, grp.key0, m.max_q_len, 0, 0, nullptr);
}

// One sequence whose keys exceed the expansion: pieces of key_rows positions, merged by log-sum-exp.
void MlaLayer::prefill_pieces(const LayerStep& s, void* cache, const StepMeta::PrefillGroup& grp) const {
  const DType act = s.act;
  const auto& m = s.m;
  const MlaExpansion& x = s.expand;
  DS_CHECK(grp.q0 + grp.q_len <= x.query_rows, "MLA prefill: {} query rows exceed the merge buffers' {}",
           grp.q0 + grp.q_len, x.query_rows);
  const int P = x.key_rows;
  const int64_t qh = int64_t(grp.q0) * Hm_;  // the chunk's first (query, head) row in the merge buffers
  for (int a = 0; a < grp.keys; a += P) {
    const int b = std::min(grp.keys, a + P);
    LatentGatherParams g;
    g.cache = cache;
    g.block_tables = m.block_tables + int64_t(m.n_dec + grp.seq0) * m.stride;
    g.bt_stride = m.stride;
    g.block_size = s.caches.block_size();
    g.pos0 = a;
    g.dst = x.lat;
    g.rows = b - a;
    g.D = R_ + dr_;
    g.fp8_row_bytes = s.caches.latent_fp8_row_bytes();
    run_latent_gather(g, act, s.ctx);
    expand_keys(s, b - a);
    // expansion row 0 is position a, i.e. key row key0 + a
    attend(s, grp.seq0, 1, grp.key0 + a, grp.q_len, a, b, x.piece_lse);
    const bool first = a == 0, last = b == grp.keys;
    void* piece_o = off(s.ws.attn_o, (int64_t(m.n_dec) + grp.q0) * Hm_ * dv_, act);
    MlaMergeParams mg;
    mg.o_a = first ? nullptr : x.acc_o + qh * dv_;
    mg.lse_a = x.acc_lse + qh;
    mg.o_b = piece_o;
    mg.lse_b = x.piece_lse + qh;
    mg.o = last ? piece_o : static_cast<void*>(x.acc_o + qh * dv_);
    mg.out_act = last;
    mg.lse = last ? nullptr : x.acc_lse + qh;
    mg.T = grp.q_len;
    mg.H = Hm_;
    mg.Dv = dv_;
    run_mla_merge(mg, act, s.ctx);
  }
}

}  // namespace ds::gpu
