// Token sampling on the host, one logits row per request: penalties, greedy or
// temperature/min-p/top-k/top-p sampling with a counter-based RNG, and logprobs of the raw logits.
// Order of operations (vLLM's): repetition penalty (HF: divide positive logits, multiply negative
// ones, over prompt + output tokens), frequency and presence penalties (OpenAI: over output tokens),
// then greedy argmax (ties: lowest id), or temperature, min-p (relative to the most likely token),
// top-k, top-p (smallest set whose probability reaches top_p) and one inverse-CDF draw at
// uniform01(seed, step) over the kept tokens in descending probability (ties: lowest id).
// The penalties read the sequence's token history (sampling/penalties.h; null: none). Then the row's
// logit_bias is added, and a token mask (sampling/token_mask.h) leaves only the allowed tokens (the
// engine never sends an empty one). Logprobs stay those of the raw logits. The CPU backend's execute()
// calls it; a NaN logit is an error.
#pragma once
#include <vector>

#include "sampling/penalties.h"
#include "sampling/sampling_params.h"
#include "sampling/token_mask.h"

namespace ds {

// logits: [rows, vocab] float32, row-major. params.size() == rows; penalties: empty (none) or one
// per row (null: none); masks: null (none) or rows x vocab (rows without has(r) unmasked).
std::vector<SampleResult> sample_cpu(const float* logits, int rows, int vocab, const std::vector<SampleParams>& params,
                                     const std::vector<const SeqPenalties*>& penalties = {},
                                     const StepMasks* masks = nullptr);

// A step's rows on the CPU with their sequences' penalty state: tracker.prepare, sample_cpu,
// tracker.record (what the CPU backend's execute() does after the forward).
std::vector<SampleResult> sample_rows_cpu(const float* logits, int vocab, const std::vector<SeqSampling>& rows,
                                          PenaltyTracker& tracker, const StepMasks* masks = nullptr);

// One row (what sample_cpu runs for each row, in parallel).
// mask: null, or the row's allowed-token bitset (StepMasks::row).
SampleResult sample_row_cpu(const float* logits, int vocab, const SampleParams& params,
                            const SeqPenalties* penalties = nullptr, const uint32_t* mask = nullptr);

}  // namespace ds
