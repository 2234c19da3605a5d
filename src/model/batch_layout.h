// The layout of one ForwardBatch for a device that runs it in one pass (the CUDA backend; pure host
// code, CUDA-free, tested under the cpu label). The batch is validated against the backend's limits
// and laid out for the kernels: single-token sequences ("decodes") first, then the prefill chunks, in
// batch order within each group; per-token and per-sequence index arrays; for each logits row (in the
// batch's row order) the token that produces it; the prefill chunks' query and key offsets; and the state
// operations the slices ask for (zero, copy, restore before the layers, save after).
//
// A batch is never split: more tokens than LayoutLimits::max_tokens is an error. The scheduler is the
// only place that chunks; it is configured within the backend's published limits (model/step.h).
#pragma once
#include <cstdint>
#include <vector>

#include "model/forward_batch.h"

namespace ds {

struct LayoutLimits {
  int vocab = 0;          // valid token ids are [0, vocab)
  int num_slots = 0;      // valid state slots are [0, num_slots)
  int num_snapshots = 0;  // valid snapshot ids are [0, num_snapshots)
  int num_blocks = 0;     // valid cache pages are [0, num_blocks)
  int block_size = 16;    // tokens per page; 0: no paged cache (block tables are not checked)
  int max_tokens = 0;     // tokens per batch; 0: no limit
};

// Throws ds::Error naming the problem: slice offsets, slots (out of range, used twice), state_init
// against context_len, copy sources and snapshot ids, block tables, token ids, the token limit.
// An empty batch is valid here (layout_batch rejects it).
void validate_batch(const ForwardBatch& b, const LayoutLimits& lim);

struct BatchLayout {
  int num_tokens = 0, num_seqs = 0;
  int num_decode = 0;        // the first num_decode sequences (and tokens) are single-token
  int bt_stride = 1;         // row stride of block_tables
  // per token [num_tokens]
  std::vector<int32_t> tokens, token_seq, token_pos, slot_mapping;
  // per sequence [num_seqs] (cu_seqlens: num_seqs + 1)
  std::vector<int32_t> cu_seqlens, slots, seq_lens, block_tables;  // block_tables [num_seqs, bt_stride]
  std::vector<int32_t> logit_rows;   // [rows] token index (in this layout) of each logits row, batch order
  std::vector<uint8_t> fresh;        // [num_seqs] 1: the sequence starts from a zero state (StateInit::Zero);
                                     // 2: a padding row (pad_decode_layout: fresh too, output unused)
  // State operations, before the layers in this order: saves_before, tail page copies, zero, copy,
  // restore; after them: save.
  std::vector<int32_t> saves_before;    // pairs (slot, snapshot), flattened (ForwardBatch::saves_before)
  std::vector<int32_t> tail_copies;     // triples (src page, dst page, rows), flattened (SeqSlice::tail_src_block)
  std::vector<int32_t> zero_slots;      // slots to zero (StateInit::Zero)
  std::vector<int32_t> copy_slots;      // pairs (src slot, dst slot), flattened (StateInit::CopySlot)
  std::vector<int32_t> restore_slots;   // pairs (snapshot, dst slot), flattened (StateInit::RestoreSnapshot)
  std::vector<int32_t> save_snapshots;  // pairs (slot, snapshot), flattened (SeqSlice::save_snapshot)
  // The prefill sequences (num_decode..num_seqs) as their own varlen batch, for the kernels that
  // take them alone: query offsets relative to token num_decode, and key offsets over [0, ctx + n) of
  // each sequence (the MLA prefill gathers a key's latent through the block tables).
  std::vector<int32_t> pre_cu_q, pre_cu_k;
  int max_q_len = 0;                 // longest prefill chunk
  int max_seq_len = 0;               // longest context + new tokens over all sequences
  int num_rows() const { return int(logit_rows.size()); }
};

// Validates (validate_batch; an empty batch is an error too) and lays the batch out.
BatchLayout layout_batch(const ForwardBatch& b, const LayoutLimits& lim);

// Pads a pure-decode layout to `bucket` sequences (scratch slot `pad_slot`, scratch page `pad_block`)
// and its block tables to `bt_stride` columns, so its layout is that of a captured graph. Padding rows
// are marked fresh with 2 (they never read the shared scratch state; the KDA decode may skip them
// whole, KdaDecodeParams::skip_padding) but are not in zero_slots.
void pad_decode_layout(BatchLayout& p, int bucket, int bt_stride, int pad_slot, int pad_block, int block_size);

}  // namespace ds
