#include "model/mla_layer.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "kernels/gemm/op.h"
#include "kernels/mla/op.h"
#include "kernels/norm/op.h"
#include "model/rows.h"

namespace ds {

MlaLayer::MlaLayer(const ModelConfig& c, const MlaWeights<HostTensor>& w, int mla_index)
    : w_(&w), index_(mla_index), hidden_(c.hidden_size), H_(c.mla.num_heads), dn_(c.mla.qk_nope_head_dim),
      dr_(c.mla.qk_rope_head_dim), dv_(c.mla.v_head_dim), R_(c.mla.kv_lora_rank), kv_eps_(c.kv_a_norm_eps),
      scale_(float(1.0 / std::sqrt(double(c.mla.qk_head_dim())))) {
  // kv_b_proj rows of head h: [h·(dn+dv), h·(dn+dv)+dn) are W_UK^h, the next dv rows W_UV^h.
  w_uk_t_.resize(size_t(H_ * R_ * dn_));
  const float* kvb = w.kv_b_proj.ptr();
  for (int64_t h = 0; h < H_; ++h)
    for (int64_t i = 0; i < dn_; ++i)
      for (int64_t c2 = 0; c2 < R_; ++c2)
        w_uk_t_[size_t((h * R_ + c2) * dn_ + i)] = kvb[(h * (dn_ + dv_) + i) * R_ + c2];
}

void MlaLayer::forward(const StepContext& ctx, const float* x, float* y, MlaLatentCache& cache) const {
  using namespace kernels;
  const int64_t T = ctx.num_tokens, Dq = dn_ + dr_, L = R_ + dr_;
  std::vector<float> q(size_t(T * H_ * Dq)), lat(size_t(T * L)), o(size_t(T * H_ * dv_));
  run_gemm_cpu({.x = x, .w = w_->q_proj.ptr(), .y = q.data(), .M = T, .N = H_ * Dq, .K = hidden_});
  run_gemm_cpu({.x = x, .w = w_->kv_a_proj.ptr(), .y = lat.data(), .M = T, .N = L, .K = hidden_});
  run_rmsnorm_cpu({.x = lat.data(), .w = w_->kv_a_norm.ptr(), .y = lat.data(), .rows = T, .dim = R_, .ldx = L,
                   .ldy = L, .eps = kv_eps_});
  // New latents go to the cache first: every form reads the sequence's whole history from there.
  for (int s = 0; s < ctx.num_seqs(); ++s) {
    const auto& table = ctx.batch.seqs[size_t(s)].block_table;
    for (int32_t i = 0; i < ctx.seq_len(s); ++i) {
      const int64_t t = ctx.cu_seqlens[size_t(s)] + i;
      cache.store(index_, table, ctx.context_lens[size_t(s)] + i, lat.data() + t * L);
    }
  }
  std::vector<int> absorbed_seqs;
  for (int s = 0; s < ctx.num_seqs(); ++s) {
    if (ctx.seq_len(s) == 1 || ctx.opts.mla_absorbed_prefill) absorbed_seqs.push_back(s);
    else expanded(ctx, s, q.data(), o.data(), cache);
  }
  if (!absorbed_seqs.empty()) absorbed(ctx, absorbed_seqs, q.data(), o.data(), cache);
  run_gemm_cpu({.x = o.data(), .w = w_->o_proj.ptr(), .y = y, .M = T, .N = hidden_, .K = H_ * dv_});
}

// Plain causal attention, the context in pieces of ForwardOptions::mla_context_piece positions: each
// piece's K/V are expanded from its cached latents, attended by the queries that see any of it, and
// merged exactly into the running output (log-sum-exp), so the workspace is bounded by piece + slice.
void MlaLayer::expanded(const StepContext& ctx, int s, const float* q, float* o,
                        const MlaLatentCache& cache) const {
  using namespace kernels;
  const int64_t Dq = dn_ + dr_, L = R_ + dr_, ctx_len = ctx.context_lens[size_t(s)];
  const int64_t n = ctx.seq_len(s), Tk = ctx_len + n, t0 = ctx.cu_seqlens[size_t(s)];
  const int64_t piece = ctx.opts.mla_context_piece;
  DS_CHECK(piece >= 1, "mla: context piece {} must be at least 1", piece);
  const int64_t P = std::min(piece, Tk);
  const auto& table = ctx.batch.seqs[size_t(s)].block_table;
  std::vector<float> lat(size_t(P * L)), kv(size_t(P * H_ * (dn_ + dv_))), k(size_t(P * H_ * Dq)),
      v(size_t(P * H_ * dv_)), lse(size_t(n * H_)), part_o, part_lse;
  float* out = o + t0 * H_ * dv_;
  for (int64_t k0 = 0; k0 < Tk; k0 += P) {
    const int64_t kp = std::min(P, Tk - k0);
    for (int64_t j = 0; j < kp; ++j) std::copy_n(cache.row(index_, table, k0 + j), L, lat.data() + j * L);
    run_gemm_cpu({.x = lat.data(), .w = w_->kv_b_proj.ptr(), .y = kv.data(), .M = kp, .N = H_ * (dn_ + dv_),
                  .K = R_, .ldx = L});
    for (int64_t j = 0; j < kp; ++j)
      for (int64_t h = 0; h < H_; ++h) {
        const float* src = kv.data() + (j * H_ + h) * (dn_ + dv_);
        float* kd = k.data() + (j * H_ + h) * Dq;
        std::copy_n(src, dn_, kd);
        std::copy_n(lat.data() + j * L + R_, dr_, kd + dn_);  // k_pe: raw, shared by all heads
        std::copy_n(src + dn_, dv_, v.data() + (j * H_ + h) * dv_);
      }
    // Queries before the piece see none of it: only [tq, n) attend.
    const int64_t tq = std::max<int64_t>(0, k0 - ctx_len), nq = n - tq;
    MlaPrefillParams a{.q = q + (t0 + tq) * H_ * Dq, .k = k.data(), .v = v.data(), .Tq = nq, .Tk = kp,
                       .H = H_, .Dqk = Dq, .Dv = dv_, .q_pos0 = ctx_len + tq, .k_pos0 = k0, .scale = scale_};
    if (k0 == 0) {  // the first piece is seen by every query: it starts the running result
      a.o = out;
      a.lse = lse.data();
      run_mla_prefill_cpu(a);
      continue;
    }
    part_o.resize(size_t(nq * H_ * dv_));
    part_lse.resize(size_t(nq * H_));
    a.o = part_o.data();
    a.lse = part_lse.data();
    run_mla_prefill_cpu(a);
    float* acc_o = out + tq * H_ * dv_;
    float* acc_lse = lse.data() + tq * H_;
    run_mla_merge_cpu({.o_a = acc_o, .lse_a = acc_lse, .o_b = part_o.data(), .lse_b = part_lse.data(),
                       .o = acc_o, .lse = acc_lse, .T = nq, .H = H_, .Dv = dv_});
  }
}

// Weight-absorbed attention over the latents: q_lat^h = W_UK^hᵀ q_nope^h, softmax over [q_lat ; q_pe]·[ĉ ; k_pe],
// out^h = W_UV^h · (Σ p ĉ). One varlen call for all the given slices.
void MlaLayer::absorbed(const StepContext& ctx, const std::vector<int>& seqs, const float* q, float* o,
                        const MlaLatentCache& cache) const {
  using namespace kernels;
  const int64_t Dq = dn_ + dr_, L = R_ + dr_;
  std::vector<int32_t> rows, cu{0}, tables;
  std::vector<int64_t> start;
  size_t max_blocks = 1;
  for (int s : seqs) max_blocks = std::max(max_blocks, ctx.batch.seqs[size_t(s)].block_table.size());
  for (int s : seqs) {
    for (int32_t t = ctx.cu_seqlens[size_t(s)]; t < ctx.cu_seqlens[size_t(s) + 1]; ++t) rows.push_back(t);
    cu.push_back(int32_t(rows.size()));
    start.push_back(ctx.context_lens[size_t(s)]);
    auto table = ctx.batch.seqs[size_t(s)].block_table;
    table.resize(max_blocks, 0);
    tables.insert(tables.end(), table.begin(), table.end());
  }
  const int64_t n = int64_t(rows.size());
  std::vector<float> qs(size_t(n * H_ * Dq)), qa(size_t(n * H_ * L)), ol(size_t(n * H_ * R_)),
      os(size_t(n * H_ * dv_));
  gather_rows(q, H_ * Dq, H_ * Dq, rows, qs.data(), H_ * Dq);
  for (int64_t h = 0; h < H_; ++h) {
    run_gemm_cpu({.x = qs.data() + h * Dq, .w = w_uk_t_.data() + h * R_ * dn_, .y = qa.data() + h * L, .M = n,
                  .N = R_, .K = dn_, .ldx = H_ * Dq, .ldy = H_ * L});
    for (int64_t t = 0; t < n; ++t)
      std::copy_n(qs.data() + (t * H_ + h) * Dq + dn_, dr_, qa.data() + (t * H_ + h) * L + R_);
  }
  run_mla_absorbed_cpu({.q = qa.data(), .cache = cache.pool(index_), .block_tables = tables.data(),
                        .cu_seqlens = cu.data(), .start_pos = start.data(), .o = ol.data(),
                        .num_seqs = int64_t(seqs.size()), .H = H_, .Dl = R_, .Dr = dr_,
                        .block_size = cache.block_size(), .max_blocks = int64_t(max_blocks), .scale = scale_});
  for (int64_t h = 0; h < H_; ++h)
    run_gemm_cpu({.x = ol.data() + h * R_, .w = w_->kv_b_proj.ptr() + (h * (dn_ + dv_) + dn_) * R_,
                  .y = os.data() + h * dv_, .M = n, .N = dv_, .K = R_, .ldx = H_ * R_, .ldy = H_ * dv_});
  scatter_rows(os.data(), H_ * dv_, H_ * dv_, rows, o, H_ * dv_);
}

}  // namespace ds
