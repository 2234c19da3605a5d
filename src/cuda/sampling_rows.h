// Host preparation of one GPU sampling launch (cuda/kernels/sampling.h): the per-row parameters and
// the penalty lists, from the rows' SampleParams and their sequences' penalty state (kept
// incrementally by PenaltyTracker, sampling/penalties.h). Pure host code; the CUDA backend and the
// sampler's test both use it.
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

#include "cuda/kernels/sampling.h"
#include "sampling/penalties.h"
#include "sampling/sampling_params.h"

namespace ds::gpu {

struct SamplingRows {
  std::vector<SampleRow> rows;                // [rows]
  std::vector<int32_t> pen_tokens, pen_counts;  // rows' lists, back to back (SampleRow::pen_begin/end)
  int max_logprobs = 0;                       // widest top-logprobs request
};

// params.size() rows; penalties empty (none) or one per row (null: none). A row's list holds its
// sequence's distinct tokens when it has a repetition penalty (prompt-only tokens with count 0),
// else only the output tokens with their counts when it has a frequency/presence penalty; the counts
// are 0 when it has only a repetition penalty. Then the row's logit_bias entries (SampleRow::bias_begin;
// the value's float bits as the count). ds::Error for a repetition_penalty <= 0. Rows are unmasked
// (SampleRow::masked 0): the backend marks the masked ones when it uploads their bitsets.
SamplingRows prepare_sampling_rows(const std::vector<SampleParams>& params,
                                   const std::vector<const SeqPenalties*>& penalties);

// The launches of one step's sampling: consecutive groups of rows [first, second) whose penalty lists
// together hold at most `entries` entries (the planned staging), as few as possible (one when all
// fit). A row whose list alone exceeds it is a group of its own (the sampler refuses it).
std::vector<std::pair<int, int>> sampling_groups(const SamplingRows& rows, int entries);

}  // namespace ds::gpu
