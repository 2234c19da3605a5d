// The plain-data description of one forward pass: what the scheduler plans and every backend runs.
#pragma once
#include <cstdint>
#include <vector>

namespace ds {

// How a sequence's KDA state slot starts a step. Applied before the step's layers, in slice order;
// a slice's save_snapshot is applied after them.
enum class StateInit : uint8_t {
  Keep,             // the slot holds this sequence's state after context_len tokens (continuing)
  Zero,             // a fresh sequence (context_len == 0): the slot is zeroed
  CopySlot,         // the slot receives a copy of slot state_src (a shared prefix of context_len tokens)
  RestoreSnapshot,  // the slot receives snapshot state_src (the state after context_len tokens)
};

// One sequence's share of a step: a prefill chunk (any length) or a single decode token.
struct SeqSlice {
  int32_t state_slot = -1;      // KDA recurrent/conv state slot owned by this sequence
  int64_t context_len = 0;      // tokens already in the caches before this step
  StateInit state_init = StateInit::Keep;  // how the state slot starts (context_len == 0 needs Zero,
                                           // CopySlot or RestoreSnapshot; Zero needs context_len == 0)
  int32_t state_src = -1;       // CopySlot: source slot; RestoreSnapshot: snapshot id
  int32_t save_snapshot = -1;   // >= 0: after this step, copy the slot's state into this snapshot
  // Prefix caching, a hit inside a page: before the layers, rows [0, tail_rows) of page tail_src_block
  // are copied into this slice's page block_table[context_len / block_size] (context_len % block_size
  // == tail_rows: the partial last block of the cached prefix, which is never shared).
  int32_t tail_src_block = -1;
  int32_t tail_rows = 0;
  int32_t num_tokens = 0;       // new tokens in this step
  int32_t token_offset = 0;     // where they start in ForwardBatch::tokens
  std::vector<int32_t> block_table;  // MLA pages covering positions [0, context_len + num_tokens)
  bool logits_all = false;      // logits for every new token (scoring) or only for the last one
  bool need_logits = true;      // false: a middle prefill chunk whose logits nobody reads
};

// A snapshot of a slot saved before anything else in a step (the state a finished sequence left in its
// slot; the slot may be re-initialised by a slice of the same step).
struct SlotSave {
  int32_t slot = -1;
  int32_t snapshot = -1;
};

struct ForwardBatch {
  std::vector<int32_t> tokens;  // all new tokens, sequence after sequence
  std::vector<SeqSlice> seqs;
  std::vector<SlotSave> saves_before;  // applied first, in order (a batch may hold only these)

  int num_tokens() const { return int(tokens.size()); }
  // Rows of the logits matrix this batch produces, in sequence order.
  int num_logit_rows() const {
    int n = 0;
    for (const auto& s : seqs) n += !s.need_logits ? 0 : (s.logits_all ? s.num_tokens : 1);
    return n;
  }
  // Appends a slice for `ids` and returns it; context_len == 0 starts from a zeroed state (Zero),
  // anything else continues the slot's state (Keep).
  SeqSlice& add(int32_t slot, int64_t context_len, const std::vector<int32_t>& ids,
                std::vector<int32_t> block_table = {}, bool logits_all = false) {
    SeqSlice s;
    s.state_slot = slot;
    s.context_len = context_len;
    s.state_init = context_len == 0 ? StateInit::Zero : StateInit::Keep;
    s.num_tokens = int32_t(ids.size());
    s.token_offset = int32_t(tokens.size());
    s.block_table = std::move(block_table);
    s.logits_all = logits_all;
    tokens.insert(tokens.end(), ids.begin(), ids.end());
    seqs.push_back(std::move(s));
    return seqs.back();
  }
};

}  // namespace ds
