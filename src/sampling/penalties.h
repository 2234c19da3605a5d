// The token history that a sequence's repetition / frequency / presence penalties need, kept
// incrementally per sequence by whoever samples (both backends use PenaltyTracker): the prompt and
// the output so far are given once, when the sequence first samples (or resumes after preemption),
// each sampled token is appended, and the state is dropped when the sequence is released.
#pragma once
#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "sampling/sampling_params.h"

namespace ds {

// Each distinct token of prompt + output once (first-seen order), with its count among the output
// tokens (0: in the prompt only). Token ids outside [0, vocab) are ignored.
class SeqPenalties {
 public:
  SeqPenalties() = default;
  SeqPenalties(const std::vector<int32_t>& prompt, const std::vector<int32_t>& output, int vocab);
  void add_prompt(int32_t token);
  void add_output(int32_t token);

  size_t size() const { return tokens_.size(); }
  const std::vector<int32_t>& tokens() const { return tokens_; }
  const std::vector<int32_t>& output_counts() const { return counts_; }

 private:
  int32_t entry(int32_t token);  // index of token's entry (created with count 0); -1 when out of range

  int vocab_ = 0;
  std::vector<int32_t> tokens_, counts_;
  std::unordered_map<int32_t, int32_t> index_;
};

// One logits row of a step to sample: which sequence it belongs to, its parameters, and (once) the
// history its penalties start from. Plain data, no pointers into the caller's requests.
struct SeqSampling {
  uint64_t seq_id = 0;
  SampleParams params;
  bool history = false;               // true: prompt/output start (or restart) this sequence's penalty
                                      // state; sent when params.penalties() and the sampler has none
  std::vector<int32_t> prompt, output;
};

// The rows' parameters, in order.
std::vector<SampleParams> params_of(const std::vector<SeqSampling>& rows);

class PenaltyTracker {
 public:
  explicit PenaltyTracker(int vocab) : vocab_(vocab) {}
  // Drops the state of these sequences (unknown ids are ignored).
  void release(const std::vector<uint64_t>& seq_ids);
  // Starts the states that rows with `history` give and returns, per row, the penalty state to apply
  // (null when the row's params have no penalty). ds::Error for a row with penalties whose sequence
  // has no state and gives no history.
  std::vector<const SeqPenalties*> prepare(const std::vector<SeqSampling>& rows);
  // Appends each row's sampled token to its sequence's state (rows without a state are skipped).
  void record(const std::vector<SeqSampling>& rows, const std::vector<SampleResult>& samples);
  size_t num_tracked() const { return seqs_.size(); }
  const SeqPenalties* find(uint64_t seq_id) const;

 private:
  int vocab_;
  std::unordered_map<uint64_t, SeqPenalties> seqs_;
};

}  // namespace ds
