// Host-side planning of one forward on the GPU: a ForwardBatch is validated, split into sub-batches
// of at most `max_tokens` tokens (a long prefill is cut into chunks, carrying state, exactly as the
// scheduler's chunked prefill does), and each sub-batch is laid out for the kernels: single-token
// sequences ("decodes") first, then the prefill chunks; per-token and per-sequence index arrays;
// and, for each logits row in the batch's order, the token that produces it. Pure host code.
#pragma once
#include <cstdint>
#include <vector>

#include "model/forward_batch.h"

namespace ds::gpu {

struct PlanLimits {
  int vocab = 0;
  int num_slots = 0;     // valid state slots are [0, num_slots)
  int num_blocks = 0;    // valid cache pages are [0, num_blocks)
  int block_size = 16;
  int max_tokens = 8192; // per sub-batch
};

struct StepPlan {
  int num_tokens = 0, num_seqs = 0;
  int num_decode = 0;        // the first num_decode sequences (and tokens) are single-token
  int bt_stride = 1;         // row stride of block_tables
  int logits_row0 = 0;       // global logits row of this sub-batch's first row
  // per token [num_tokens]
  std::vector<int32_t> tokens, token_seq, token_pos, slot_mapping;
  // per sequence [num_seqs] (cu_seqlens: num_seqs + 1)
  std::vector<int32_t> cu_seqlens, slots, seq_lens, block_tables;  // block_tables [num_seqs, bt_stride]
  std::vector<int32_t> logit_rows;   // [rows] token index (in this plan) of each logits row, batch order
  std::vector<int32_t> fresh_slots;  // slots to zero before the forward (context_len == 0)
  std::vector<uint8_t> fresh;        // [num_seqs] 1: the sequence starts from a zero state
  // The prefill sequences (num_decode..num_seqs) as their own varlen batch, for the kernels that
  // take them alone: query offsets relative to token num_decode, key offsets over [0, ctx + n) of
  // each sequence, and the cache row of every key position (for gathering latents).
  std::vector<int32_t> pre_cu_q, pre_cu_k, key_rows;
  int max_q_len = 0;                 // longest prefill chunk
  int max_seq_len = 0;               // longest context + new tokens over all sequences
  int num_rows() const { return int(logit_rows.size()); }
};

// Throws ds::Error naming the problem (bad slot, token id, block table, duplicate slot, ...).
std::vector<StepPlan> plan_forward(const ForwardBatch& b, const PlanLimits& lim);

// Pads a pure-decode plan to `bucket` sequences (scratch slot `pad_slot`, scratch page `pad_block`)
// and its block tables to `bt_stride` columns, so its layout is that of a captured graph.
void pad_decode_plan(StepPlan& p, int bucket, int bt_stride, int pad_slot, int pad_block, int block_size);

}  // namespace ds::gpu
