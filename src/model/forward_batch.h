// The plain-data description of one forward pass: what the scheduler plans and every backend runs.
#pragma once
#include <cstdint>
#include <vector>

namespace ds {

// One sequence's share of a step: a prefill chunk (any length) or a single decode token.
struct SeqSlice {
  int32_t state_slot = -1;      // KDA recurrent/conv state slot owned by this sequence
  int64_t context_len = 0;      // tokens already in the caches before this step (0: fresh sequence,
                                // its state slot is zeroed before use)
  int32_t num_tokens = 0;       // new tokens in this step
  int32_t token_offset = 0;     // where they start in ForwardBatch::tokens
  std::vector<int32_t> block_table;  // MLA pages covering positions [0, context_len + num_tokens)
  bool logits_all = false;      // logits for every new token (scoring) or only for the last one
  bool need_logits = true;      // false: a middle prefill chunk whose logits nobody reads
};

struct ForwardBatch {
  std::vector<int32_t> tokens;  // all new tokens, sequence after sequence
  std::vector<SeqSlice> seqs;

  int num_tokens() const { return int(tokens.size()); }
  // Rows of the logits matrix this batch produces, in sequence order.
  int num_logit_rows() const {
    int n = 0;
    for (const auto& s : seqs) n += !s.need_logits ? 0 : (s.logits_all ? s.num_tokens : 1);
    return n;
  }
  // Appends a slice for `ids` and returns it.
  SeqSlice& add(int32_t slot, int64_t context_len, const std::vector<int32_t>& ids,
                std::vector<int32_t> block_table = {}, bool logits_all = false) {
    SeqSlice s;
    s.state_slot = slot;
    s.context_len = context_len;
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
