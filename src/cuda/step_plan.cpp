#include "cuda/step_plan.h"

#include <algorithm>
#include <set>

#include "core/error.h"

namespace ds::gpu {
namespace {

// A contiguous piece [begin, begin + n) of one sequence's new tokens.
struct Piece {
  int seq;
  int begin, n;
  bool last;  // holds the slice's last token
};

void validate(const ForwardBatch& b, const PlanLimits& lim) {
  DS_CHECK(!b.seqs.empty(), "forward: empty batch");
  std::set<int32_t> slots;
  int64_t expect_offset = 0;
  for (size_t i = 0; i < b.seqs.size(); ++i) {
    const auto& s = b.seqs[i];
    DS_CHECK(s.num_tokens > 0, "forward: sequence {} has no tokens", i);
    DS_CHECK(s.token_offset == expect_offset, "forward: sequence {} token_offset {} (expected {})", i,
             s.token_offset, expect_offset);
    expect_offset += s.num_tokens;
    DS_CHECK(s.state_slot >= 0 && s.state_slot < lim.num_slots, "forward: sequence {} state slot {} outside [0, {})",
             i, s.state_slot, lim.num_slots);
    DS_CHECK(slots.insert(s.state_slot).second, "forward: state slot {} used twice in one batch", s.state_slot);
    DS_CHECK(s.context_len >= 0, "forward: sequence {} has a negative context length", i);
    int64_t need = (s.context_len + s.num_tokens + lim.block_size - 1) / lim.block_size;
    DS_CHECK(int64_t(s.block_table.size()) >= need,
             "forward: sequence {} block table has {} pages, {} needed for {} positions", i, s.block_table.size(),
             need, s.context_len + s.num_tokens);
    for (int64_t j = 0; j < need; ++j) {
      int32_t blk = s.block_table[size_t(j)];
      DS_CHECK(blk >= 0 && blk < lim.num_blocks, "forward: sequence {} page {} outside [0, {})", i, blk,
               lim.num_blocks);
    }
  }
  DS_CHECK(expect_offset == int64_t(b.tokens.size()), "forward: {} tokens given, slices cover {}", b.tokens.size(),
           expect_offset);
  for (size_t i = 0; i < b.tokens.size(); ++i)
    DS_CHECK(b.tokens[i] >= 0 && b.tokens[i] < lim.vocab, "forward: token id {} at {} outside [0, {})", b.tokens[i],
             i, lim.vocab);
}

StepPlan build(const ForwardBatch& b, const std::vector<Piece>& pieces, const PlanLimits& lim, int row0) {
  StepPlan p;
  p.logits_row0 = row0;
  // decodes first, each group in batch order
  std::vector<const Piece*> order;
  for (const auto& pc : pieces)
    if (pc.n == 1) order.push_back(&pc);
  p.num_decode = int(order.size());
  for (const auto& pc : pieces)
    if (pc.n != 1) order.push_back(&pc);
  p.num_seqs = int(order.size());
  int stride = 1;
  for (const Piece* pc : order) {
    const auto& s = b.seqs[size_t(pc->seq)];
    int64_t end = s.context_len + pc->begin + pc->n;
    stride = std::max<int>(stride, int((end + lim.block_size - 1) / lim.block_size));
  }
  p.bt_stride = stride;
  p.cu_seqlens.push_back(0);
  p.block_tables.assign(size_t(p.num_seqs) * stride, 0);
  std::vector<int> first_token(pieces.size());
  for (int q = 0; q < p.num_seqs; ++q) {
    const Piece* pc = order[size_t(q)];
    const auto& s = b.seqs[size_t(pc->seq)];
    int64_t ctx = s.context_len + pc->begin;
    first_token[size_t(pc - pieces.data())] = p.num_tokens;
    for (int i = 0; i < pc->n; ++i) {
      int64_t pos = ctx + i;
      p.tokens.push_back(b.tokens[size_t(s.token_offset + pc->begin + i)]);
      p.token_seq.push_back(q);
      p.token_pos.push_back(int32_t(pos));
      p.slot_mapping.push_back(s.block_table[size_t(pos / lim.block_size)] * lim.block_size +
                               int32_t(pos % lim.block_size));
    }
    p.num_tokens += pc->n;
    p.cu_seqlens.push_back(p.num_tokens);
    p.slots.push_back(s.state_slot);
    p.seq_lens.push_back(int32_t(ctx + pc->n));
    int64_t used = (ctx + pc->n + lim.block_size - 1) / lim.block_size;
    std::copy(s.block_table.begin(), s.block_table.begin() + used, p.block_tables.begin() + size_t(q) * stride);
    if (ctx == 0) p.fresh_slots.push_back(s.state_slot);
    p.fresh.push_back(ctx == 0 ? 1 : 0);
    p.max_seq_len = std::max<int>(p.max_seq_len, int(ctx + pc->n));
    if (q >= p.num_decode) {
      if (p.pre_cu_q.empty()) {
        p.pre_cu_q.push_back(0);
        p.pre_cu_k.push_back(0);
      }
      p.pre_cu_q.push_back(p.pre_cu_q.back() + pc->n);
      p.pre_cu_k.push_back(p.pre_cu_k.back() + int32_t(ctx + pc->n));
      p.max_q_len = std::max(p.max_q_len, pc->n);
      for (int64_t pos = 0; pos < ctx + pc->n; ++pos)
        p.key_rows.push_back(s.block_table[size_t(pos / lim.block_size)] * lim.block_size +
                             int32_t(pos % lim.block_size));
    }
  }
  // logits rows in batch order (pieces are in batch order)
  for (size_t k = 0; k < pieces.size(); ++k) {
    const Piece& pc = pieces[k];
    const auto& s = b.seqs[size_t(pc.seq)];
    if (!s.need_logits) continue;
    if (s.logits_all) {
      for (int i = 0; i < pc.n; ++i) p.logit_rows.push_back(first_token[k] + i);
    } else if (pc.last) {
      p.logit_rows.push_back(first_token[k] + pc.n - 1);
    }
  }
  return p;
}

}  // namespace

std::vector<StepPlan> plan_forward(const ForwardBatch& b, const PlanLimits& lim) {
  validate(b, lim);
  std::vector<StepPlan> out;
  std::vector<Piece> cur;
  int cur_tokens = 0, rows = 0;
  auto flush = [&] {
    if (cur.empty()) return;
    out.push_back(build(b, cur, lim, rows));
    rows += out.back().num_rows();
    cur.clear();
    cur_tokens = 0;
  };
  for (int i = 0; i < int(b.seqs.size()); ++i) {
    const auto& s = b.seqs[size_t(i)];
    int done = 0;
    while (done < s.num_tokens) {
      if (cur_tokens == lim.max_tokens) flush();
      int n = std::min(s.num_tokens - done, lim.max_tokens - cur_tokens);
      cur.push_back(Piece{i, done, n, done + n == s.num_tokens});
      cur_tokens += n;
      done += n;
      // a sequence continues in the next sub-batch only after this one ran (its state carries)
      if (done < s.num_tokens) flush();
    }
  }
  flush();
  return out;
}

void pad_decode_plan(StepPlan& p, int bucket, int bt_stride, int pad_slot, int pad_block, int block_size) {
  DS_CHECK(p.num_decode == p.num_seqs && p.num_tokens == p.num_seqs, "pad_decode_plan: not a pure decode plan");
  DS_CHECK(bucket >= p.num_seqs && bt_stride >= p.bt_stride, "pad_decode_plan: bucket too small");
  std::vector<int32_t> bt(size_t(bucket) * bt_stride, pad_block);
  for (int q = 0; q < p.num_seqs; ++q)
    std::copy(p.block_tables.begin() + size_t(q) * p.bt_stride, p.block_tables.begin() + size_t(q + 1) * p.bt_stride,
              bt.begin() + size_t(q) * bt_stride);
  p.block_tables = std::move(bt);
  p.bt_stride = bt_stride;
  for (int q = p.num_seqs; q < bucket; ++q) {
    p.tokens.push_back(0);
    p.token_seq.push_back(q);
    p.token_pos.push_back(0);
    p.slot_mapping.push_back(pad_block * block_size);
    p.cu_seqlens.push_back(q + 1);
    p.slots.push_back(pad_slot);
    p.seq_lens.push_back(1);
    p.fresh.push_back(1);  // padding rows never read the (shared, scratch) state
  }
  p.num_seqs = p.num_tokens = p.num_decode = bucket;
}

}  // namespace ds::gpu
