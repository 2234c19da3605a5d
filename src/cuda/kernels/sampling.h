// Token sampling on the GPU, one block per logits row, with the CPU sampler's semantics
// (src/sampling/cpu_sampler.h): repetition penalty over prompt + output tokens, frequency/presence
// penalties over output tokens, then greedy argmax (ties: lowest id), or temperature with min-p
// (relative to the most likely token), top-k, top-p (smallest prefix in descending probability whose
// mass reaches top_p) and one inverse-CDF draw in descending probability (ties: lowest id) at the
// request's uniform number u = uniform01(seed, step) (sampling/rng.h; computed on the host). Kept sets
// are found by bisection over the probabilities' float bits instead of sorting. Logprobs are the
// log-softmax of the raw logits: the sampled token's and the top-n. After the penalties a row's
// logit_bias entries are added, then its token mask (sampling/token_mask.h) leaves only the allowed
// tokens (masked or biased rows never take the greedy fast path).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/device_context.h"

namespace ds::gpu {

struct SampleRow {
  float temperature = 1.f;   // <= 0 (or top_k == 1): greedy
  int top_k = -1;            // <= 0: off
  float top_p = 1.f;
  float min_p = 0.f;
  float presence_penalty = 0.f, frequency_penalty = 0.f, repetition_penalty = 1.f;
  double u = 0.0;            // uniform01(seed, step)
  int num_logprobs = -1;     // top-n alternatives wanted (capped at max_logprobs)
  int pen_begin = 0, pen_end = 0;  // this row's entries in pen_tokens / pen_counts: penalties in
  int bias_begin = 0;              // [pen_begin, bias_begin), logit biases in [bias_begin, pen_end)
                                   // (the bias value's float bits in pen_counts)
  int masked = 0;                  // 1: the row's bitset in SamplingParams::mask applies
  int forced = -1;                 // >= 0: a scoring row (SampleParams::forced_token): this token, nothing drawn
                                   // (the row is greedy without penalties, bias or mask: the prepass's path)
};

struct SamplingParams {
  bool radix = false;               // set by run_sampling from ctx.switches.sampling_radix
  const float* logits = nullptr;    // [rows, ld] fp32 raw logits (not modified)
  int64_t ld = 0;
  int rows = 0, vocab = 0;
  const SampleRow* row_params = nullptr;  // [rows] device
  const int32_t* pen_tokens = nullptr;    // distinct tokens of prompt + output of each row
  const int32_t* pen_counts = nullptr;    // how often each occurs among the output tokens
  const uint32_t* mask = nullptr;         // [rows, mask_words] allowed-token bitsets (rows with masked)
  int mask_words = 0;
  float* work = nullptr;                  // sampling_workspace_floats(rows, vocab) fp32 scratch
  int32_t* out_token = nullptr;           // [rows]
  float* out_logprob = nullptr;           // [rows]
  int32_t* out_rank = nullptr;            // [rows] where num_logprobs >= 0: 1 + raw logits above the token's (ties count)
  int32_t* out_top_ids = nullptr;         // [rows, max_logprobs] best first
  float* out_top_logprobs = nullptr;      // [rows, max_logprobs]
  int max_logprobs = 0;
};
// Two launches: per-row statistics of the raw logits over many blocks (maximum, sum of exponentials,
// first argmax), then the per-row sampler, which finishes greedy rows without penalties from them.
void run_sampling(const SamplingParams& p, const DeviceContext& ctx);
size_t sampling_workspace_floats(int rows, int vocab);

}  // namespace ds::gpu
