// Per-row sampling parameters and results, shared by the CPU and GPU samplers. The token history
// the penalties read is not here: it is kept per sequence by the sampler (sampling/penalties.h).
#pragma once
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

namespace ds {

// Repetition penalties below this act as this: dividing a logit by less overflows float (a logit of
// 20 / 1e-38 is inf, and inf - inf left no candidate token); at 1e-6 a penalized positive logit
// already outweighs every other token, so the choice is the same as with any smaller penalty.
constexpr float kMinRepetitionPenalty = 1e-6f;

struct SampleParams {
  float temperature = 1.0f;        // <= 0 (or top_k == 1): greedy
  int top_k = -1;                  // <= 0: off
  float top_p = 1.0f;
  float min_p = 0.0f;
  float presence_penalty = 0.0f;   // OpenAI semantics, on tokens generated so far
  float frequency_penalty = 0.0f;
  float repetition_penalty = 1.0f; // HF/vLLM semantics, on prompt + generated tokens
  uint64_t seed = 0;               // with `step`, fixes the random draw (reproducible per request)
  uint64_t step = 0;               // index of the token being sampled within the request
  int num_logprobs = -1;           // < 0: none; 0: the sampled token's; k: also the top k
  // >= 0: a scoring row (prompt logprobs): nothing is sampled; the result is this token with its logprob (and
  // the top num_logprobs) under the raw logits. No penalties, bias or mask apply; the sampler's penalty history
  // does not record it.
  int32_t forced_token = -1;
  // OpenAI logit_bias: (token id, bias) pairs, ids in range and distinct, each bias added to the raw logit
  // before penalties and sampling (logprobs stay those of the raw logits). The engine sets it from
  // GenerationRequest::logit_bias; null or empty: none.
  std::shared_ptr<const std::vector<std::pair<int32_t, float>>> logit_bias;
  bool greedy() const { return temperature <= 0.0f || top_k == 1; }
  // Whether sampling needs the sequence's token history (sampling/penalties.h).
  bool penalties() const {
    return repetition_penalty != 1.0f || frequency_penalty != 0.0f || presence_penalty != 0.0f;
  }
};

struct SampleResult {
  int32_t token = -1;
  float logprob = 0.0f;  // log-softmax of the raw (unpenalised, untempered) logits
  std::vector<std::pair<int32_t, float>> top_logprobs;  // best first
  // With logprobs asked (num_logprobs >= 0): vLLM's rank, the number of raw logits >= the token's (the argmax
  // is 1; ties share the worse rank); 0 where not computed.
  int32_t rank = 0;
};

}  // namespace ds
