#include "model/kimi_model.h"

#include <algorithm>

#include "core/error.h"
#include "kernels/embedding/op.h"
#include "kernels/gemm/op.h"
#include "kernels/norm/op.h"
#include "model/batch_layout.h"

namespace ds {

KimiModel::KimiModel(const ModelConfig& c, const HostWeights& w, ModelShard shard) : cfg_(c), w_(&w), shard_(shard) {
  DS_CHECK(shard_.spec.size == 1 || (shard_.comm && shard_.comm->size() == shard_.spec.size &&
                                     shard_.comm->rank() == shard_.spec.rank),
           "model shard {}/{}: no communicator of that group", shard_.spec.rank, shard_.spec.size);
  DS_CHECK(int(w.layers.size()) == c.num_layers, "weights have {} layers, the config {}", w.layers.size(),
           c.num_layers);
  for (int l = 0; l < c.num_layers; ++l) {
    const auto& L = w.layers[size_t(l)];
    if (c.is_kda(l)) attn_.emplace_back(std::in_place_type<KdaLayer>, c, L.kda, c.attn_index(l));
    else attn_.emplace_back(std::in_place_type<MlaLayer>, c, L.mla, c.attn_index(l));
    if (c.is_moe(l)) ffn_.emplace_back(std::in_place_type<MoeLayer>, c, L.moe, l);
    else ffn_.emplace_back(std::in_place_type<DenseMlp>, L.mlp, int64_t(c.hidden_size));
  }
}

void KimiModel::validate(const ForwardBatch& b, const KdaStateStore& kda, const MlaLatentCache& mla) const {
  LayoutLimits lim;
  lim.vocab = cfg_.vocab_size;
  lim.num_slots = kda.num_slots();
  lim.num_snapshots = kda.num_snapshots();
  lim.num_blocks = mla.num_blocks();
  lim.block_size = cfg_.num_mla_layers() > 0 ? mla.block_size() : 0;
  validate_batch(b, lim);
}

void KimiModel::forward(const ForwardBatch& batch, KdaStateStore& kda, MlaLatentCache& mla,
                        std::vector<float>* logits, const ForwardOptions& opts, ForwardTrace* trace) const {
  using namespace kernels;
  validate(batch, kda, mla);
  StepContext ctx(batch, opts);
  ctx.trace = trace;
  ctx.num_tokens = batch.num_tokens();
  ctx.cu_seqlens.push_back(0);
  for (const SlotSave& v : batch.saves_before) kda.save_snapshot(v.slot, v.snapshot);
  for (const auto& s : batch.seqs) {
    if (s.tail_src_block >= 0)
      mla.copy_rows(s.tail_src_block, s.block_table[size_t(s.context_len / mla.block_size())], s.tail_rows);
    ctx.cu_seqlens.push_back(s.token_offset + s.num_tokens);
    ctx.slots.push_back(s.state_slot);
    ctx.context_lens.push_back(s.context_len);
    switch (s.state_init) {
      case StateInit::Keep: break;
      case StateInit::Zero: kda.zero_slot(s.state_slot); break;
      case StateInit::CopySlot: kda.copy_slot(s.state_src, s.state_slot); break;
      case StateInit::RestoreSnapshot: kda.restore_snapshot(s.state_src, s.state_slot); break;
    }
  }
  const int64_t T = ctx.num_tokens, D = cfg_.hidden_size, V = cfg_.vocab_size;
  if (trace) *trace = ForwardTrace{};
  if (T == 0) {  // an empty step: no rows (and no offsets into empty buffers: UB, found by UBSan)
    logits->clear();
    return;
  }
  std::vector<float> h(size_t(T * D)), xn(size_t(T * D)), out(size_t(T * D));
  run_embedding_cpu({.ids = batch.tokens.data(), .table = w_->embed.ptr(), .y = h.data(), .T = T, .vocab = V,
                     .dim = D});
  if (trace) trace->hidden.push_back(h);
  auto add = [&] {
    for (int64_t i = 0; i < T * D; ++i) h[size_t(i)] += out[size_t(i)];
  };
  for (int l = 0; l < cfg_.num_layers; ++l) {
    const auto& L = w_->layers[size_t(l)];
    run_rmsnorm_cpu({.x = h.data(), .w = L.input_norm.ptr(), .y = xn.data(), .rows = T, .dim = D,
                     .eps = cfg_.rms_norm_eps});
    if (auto* k = std::get_if<KdaLayer>(&attn_[size_t(l)])) k->forward(ctx, xn.data(), out.data(), kda);
    else std::get<MlaLayer>(attn_[size_t(l)]).forward(ctx, xn.data(), out.data(), mla);
    if (shard_.spec.tp > 1) reduce(out);
    add();
    run_rmsnorm_cpu({.x = h.data(), .w = L.post_norm.ptr(), .y = xn.data(), .rows = T, .dim = D,
                     .eps = cfg_.rms_norm_eps});
    if (auto* m = std::get_if<MoeLayer>(&ffn_[size_t(l)])) m->forward(ctx, xn.data(), out.data());
    else std::get<DenseMlp>(ffn_[size_t(l)]).forward(T, xn.data(), out.data());
    if (cfg_.is_moe(l) ? shard_.spec.size > 1 : shard_.spec.tp > 1) reduce(out);
    add();
    if (trace) trace->hidden.push_back(h);
  }
  // Logits only for the rows the slices want.
  std::vector<int32_t> rows;
  for (const auto& s : batch.seqs) {
    if (!s.need_logits) continue;
    for (int32_t i = s.logits_all ? 0 : s.num_tokens - 1; i < s.num_tokens; ++i) rows.push_back(s.token_offset + i);
  }
  const int64_t R = int64_t(rows.size());
  std::vector<float> fin(size_t(R * D));
  for (int64_t r = 0; r < R; ++r) std::copy_n(h.data() + int64_t(rows[size_t(r)]) * D, D, fin.data() + r * D);
  run_rmsnorm_cpu({.x = fin.data(), .w = w_->final_norm.ptr(), .y = fin.data(), .rows = R, .dim = D,
                   .eps = cfg_.rms_norm_eps});
  lm_head(fin.data(), R, logits);
  for (const auto& s : batch.seqs)
    if (s.save_snapshot >= 0) kda.save_snapshot(s.state_slot, s.save_snapshot);
}

void KimiModel::reduce(std::vector<float>& out) const { shard_.comm->all_reduce_sum(out); }

// logits [rows, vocab] from the final-normed rows x; a vocabulary-split head computes its columns and
// gathers the others' (ranks in vocabulary order), so sampling sees every logit, exactly.
void KimiModel::lm_head(const float* x, int64_t R, std::vector<float>* logits) const {
  using namespace kernels;
  const int64_t D = cfg_.hidden_size, V = cfg_.vocab_size;
  const HostTensor& head = cfg_.tie_word_embeddings ? w_->embed : w_->lm_head;
  const int64_t Vl = head.shape.at(0);
  logits->resize(size_t(R * V));
  if (Vl == V) {
    run_gemm_cpu({.x = x, .w = head.ptr(), .y = logits->data(), .M = R, .N = V, .K = D});
    return;
  }
  const int64_t parts = shard_.spec.tp;
  DS_CHECK(Vl * parts == V, "lm_head shard of {} rows: {} of them do not make the vocabulary of {}", Vl, parts, V);
  std::vector<float> mine(size_t(R * Vl)), all(size_t(parts * R * Vl));
  run_gemm_cpu({.x = x, .w = head.ptr(), .y = mine.data(), .M = R, .N = Vl, .K = D});
  shard_.comm->all_gather(mine, all);
  for (int64_t p = 0; p < parts; ++p)
    for (int64_t r = 0; r < R; ++r)
      std::copy_n(all.data() + (p * R + r) * Vl, Vl, logits->data() + r * V + p * Vl);
}

}  // namespace ds
