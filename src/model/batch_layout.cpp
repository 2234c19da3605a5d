#include "model/batch_layout.h"

#include <algorithm>
#include <set>

#include "core/error.h"

namespace ds {
namespace {

void validate_state_init(const ForwardBatch& b, const LayoutLimits& lim) {
  std::set<int32_t> initialised, saved;
  for (const SlotSave& v : b.saves_before) {
    DS_CHECK(v.slot >= 0 && v.slot < lim.num_slots && v.snapshot >= 0 && v.snapshot < lim.num_snapshots,
             "forward: a save before the step of slot {} into snapshot {} (valid: [0, {}) and [0, {}))", v.slot,
             v.snapshot, lim.num_slots, lim.num_snapshots);
    DS_CHECK(saved.insert(v.snapshot).second, "forward: snapshot {} is saved twice in one batch", v.snapshot);
  }
  for (const SeqSlice& s : b.seqs)
    if (s.state_init != StateInit::Keep) initialised.insert(s.state_slot);
  for (size_t i = 0; i < b.seqs.size(); ++i) {
    const SeqSlice& s = b.seqs[i];
    switch (s.state_init) {
      case StateInit::Keep:
        DS_CHECK(s.context_len > 0, "forward: sequence {} starts (context_len 0) but its state_init is Keep", i);
        break;
      case StateInit::Zero:
        DS_CHECK(s.context_len == 0, "forward: sequence {} has context_len {} but a zeroed state", i,
                 s.context_len);
        break;
      case StateInit::CopySlot:
        DS_CHECK(s.state_src >= 0 && s.state_src < lim.num_slots && s.state_src != s.state_slot,
                 "forward: sequence {} copies its state from slot {} (valid: [0, {}) other than its own {})", i,
                 s.state_src, lim.num_slots, s.state_slot);
        DS_CHECK(!initialised.count(s.state_src),
                 "forward: sequence {} copies slot {}, which this batch initialises itself", i, s.state_src);
        break;
      case StateInit::RestoreSnapshot:
        DS_CHECK(s.state_src >= 0 && s.state_src < lim.num_snapshots,
                 "forward: sequence {} restores snapshot {} outside [0, {})", i, s.state_src, lim.num_snapshots);
        break;
    }
    if (s.tail_src_block >= 0) {
      DS_CHECK(lim.block_size > 0 && s.tail_rows > 0 && s.context_len % lim.block_size == s.tail_rows,
               "forward: sequence {} copies {} rows of a partial page at context_len {} (page of {})", i,
               s.tail_rows, s.context_len, lim.block_size);
      DS_CHECK(s.tail_src_block < lim.num_blocks &&
                   s.tail_src_block != s.block_table[size_t(s.context_len / lim.block_size)],
               "forward: sequence {} copies page {} (valid: [0, {}), not its own)", i, s.tail_src_block,
               lim.num_blocks);
    }
    if (s.save_snapshot >= 0) {
      DS_CHECK(s.save_snapshot < lim.num_snapshots, "forward: sequence {} saves snapshot {} outside [0, {})", i,
               s.save_snapshot, lim.num_snapshots);
      DS_CHECK(saved.insert(s.save_snapshot).second, "forward: snapshot {} is saved twice in one batch",
               s.save_snapshot);
    }
  }
}

// The cache row (page * block_size + offset) of position `pos` of a slice.
int32_t cache_row(const SeqSlice& s, int64_t pos, int block_size) {
  return s.block_table[size_t(pos / block_size)] * block_size + int32_t(pos % block_size);
}

}  // namespace

void validate_batch(const ForwardBatch& b, const LayoutLimits& lim) {
  std::set<int32_t> slots;
  int64_t expect_offset = 0;
  for (size_t i = 0; i < b.seqs.size(); ++i) {
    const auto& s = b.seqs[i];
    DS_CHECK(s.num_tokens > 0, "forward: sequence {} has no tokens", i);
    DS_CHECK(s.token_offset == expect_offset, "forward: sequence {} token_offset {} (expected {}: slices must be "
             "contiguous and in order)", i, s.token_offset, expect_offset);
    expect_offset += s.num_tokens;
    DS_CHECK(s.state_slot >= 0 && s.state_slot < lim.num_slots, "forward: sequence {} state slot {} outside [0, {})",
             i, s.state_slot, lim.num_slots);
    DS_CHECK(slots.insert(s.state_slot).second, "forward: state slot {} used twice in one batch", s.state_slot);
    DS_CHECK(s.context_len >= 0, "forward: sequence {} has a negative context length", i);
    if (lim.block_size <= 0) continue;
    const int64_t need = (s.context_len + s.num_tokens + lim.block_size - 1) / lim.block_size;
    DS_CHECK(int64_t(s.block_table.size()) >= need,
             "forward: sequence {} block table has {} pages, {} needed for {} positions", i, s.block_table.size(),
             need, s.context_len + s.num_tokens);
    for (int64_t j = 0; j < need; ++j) {
      const int32_t blk = s.block_table[size_t(j)];
      DS_CHECK(blk >= 0 && blk < lim.num_blocks, "forward: sequence {} page {} outside [0, {})", i, blk,
               lim.num_blocks);
    }
  }
  DS_CHECK(expect_offset == int64_t(b.tokens.size()), "forward: {} tokens given, slices cover {}", b.tokens.size(),
           expect_offset);
  DS_CHECK(lim.max_tokens <= 0 || b.num_tokens() <= lim.max_tokens,
           "forward: a batch of {} tokens exceeds the backend's limit of {} tokens per step (the scheduler "
           "chunks within the published limits; callers outside the engine must chunk too)",
           b.num_tokens(), lim.max_tokens);
  for (size_t i = 0; i < b.tokens.size(); ++i)
    DS_CHECK(b.tokens[i] >= 0 && b.tokens[i] < lim.vocab, "forward: token id {} at {} outside [0, {})", b.tokens[i],
             i, lim.vocab);
  validate_state_init(b, lim);
}

BatchLayout layout_batch(const ForwardBatch& b, const LayoutLimits& lim) {
  DS_CHECK(!b.seqs.empty(), "forward: empty batch");
  validate_batch(b, lim);
  DS_CHECK(lim.block_size > 0, "layout_batch: block_size {} must be positive", lim.block_size);
  BatchLayout p;
  // decodes first, each group in batch order
  std::vector<int> order;
  for (int i = 0; i < int(b.seqs.size()); ++i)
    if (b.seqs[size_t(i)].num_tokens == 1) order.push_back(i);
  p.num_decode = int(order.size());
  for (int i = 0; i < int(b.seqs.size()); ++i)
    if (b.seqs[size_t(i)].num_tokens != 1) order.push_back(i);
  p.num_seqs = int(order.size());
  int stride = 1;
  for (const SeqSlice& s : b.seqs)
    stride = std::max<int>(stride, int((s.context_len + s.num_tokens + lim.block_size - 1) / lim.block_size));
  p.bt_stride = stride;
  p.cu_seqlens.push_back(0);
  p.block_tables.assign(size_t(p.num_seqs) * stride, 0);
  std::vector<int> first_token(b.seqs.size());
  for (int q = 0; q < p.num_seqs; ++q) {
    const SeqSlice& s = b.seqs[size_t(order[size_t(q)])];
    const int64_t ctx = s.context_len;
    const int n = s.num_tokens;
    first_token[size_t(order[size_t(q)])] = p.num_tokens;
    for (int i = 0; i < n; ++i) {
      p.tokens.push_back(b.tokens[size_t(s.token_offset + i)]);
      p.token_seq.push_back(q);
      p.token_pos.push_back(int32_t(ctx + i));
      p.slot_mapping.push_back(cache_row(s, ctx + i, lim.block_size));
    }
    p.num_tokens += n;
    p.cu_seqlens.push_back(p.num_tokens);
    p.slots.push_back(s.state_slot);
    p.seq_lens.push_back(int32_t(ctx + n));
    const int64_t used = (ctx + n + lim.block_size - 1) / lim.block_size;
    std::copy(s.block_table.begin(), s.block_table.begin() + used, p.block_tables.begin() + size_t(q) * stride);
    p.fresh.push_back(s.state_init == StateInit::Zero ? 1 : 0);
    p.max_seq_len = std::max<int>(p.max_seq_len, int(ctx + n));
    if (q >= p.num_decode) {
      if (p.pre_cu_q.empty()) {
        p.pre_cu_q.push_back(0);
        p.pre_cu_k.push_back(0);
      }
      p.pre_cu_q.push_back(p.pre_cu_q.back() + n);
      p.pre_cu_k.push_back(p.pre_cu_k.back() + int32_t(ctx + n));
      p.max_q_len = std::max(p.max_q_len, n);
    }
  }
  // state operations and logits rows, in batch order
  for (const SlotSave& v : b.saves_before) p.saves_before.insert(p.saves_before.end(), {v.slot, v.snapshot});
  for (size_t i = 0; i < b.seqs.size(); ++i) {
    const SeqSlice& s = b.seqs[i];
    if (s.tail_src_block >= 0)
      p.tail_copies.insert(p.tail_copies.end(), {s.tail_src_block, s.block_table[size_t(s.context_len / lim.block_size)],
                                                 s.tail_rows});
    switch (s.state_init) {
      case StateInit::Keep: break;
      case StateInit::Zero: p.zero_slots.push_back(s.state_slot); break;
      case StateInit::CopySlot: p.copy_slots.insert(p.copy_slots.end(), {s.state_src, s.state_slot}); break;
      case StateInit::RestoreSnapshot:
        p.restore_slots.insert(p.restore_slots.end(), {s.state_src, s.state_slot});
        break;
    }
    if (s.save_snapshot >= 0) p.save_snapshots.insert(p.save_snapshots.end(), {s.state_slot, s.save_snapshot});
    if (!s.need_logits) continue;
    for (int32_t t = s.logits_all ? 0 : s.num_tokens - 1; t < s.num_tokens; ++t)
      p.logit_rows.push_back(first_token[i] + t);
  }
  return p;
}

void pad_decode_layout(BatchLayout& p, int bucket, int bt_stride, int pad_slot, int pad_block, int block_size) {
  DS_CHECK(p.num_decode == p.num_seqs && p.num_tokens == p.num_seqs, "pad_decode_layout: not a pure decode layout");
  DS_CHECK(bucket >= p.num_seqs && bt_stride >= p.bt_stride, "pad_decode_layout: bucket too small");
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
    p.fresh.push_back(2);  // padding rows never read the (shared, scratch) state; 2: the KDA decode may skip them
  }
  p.num_seqs = p.num_tokens = p.num_decode = bucket;
}

}  // namespace ds
