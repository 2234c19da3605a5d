// The scheduler's side of a step: the StepPlan / StepResult it exchanges with the backend (model/step.h)
// and what a step did to each request.
#pragma once
#include <cstdint>

#include "model/step.h"
#include "sched/request.h"

namespace ds {

// What a step did to one request: it sampled a token, or (Request::prompt_logprobs) scored prompt tokens,
// or both (the prompt's last chunk scores its tokens and samples the first output token).
struct RequestUpdate {
  uint64_t request_id = 0;
  bool sampled = true;                 // false: prompt scores only (a middle prefill chunk); `sample` unset
  SampleResult sample;                 // the new token and its logprobs
  RequestStatus status = RequestStatus::Running;  // Running, or why it finished
  int64_t cached_tokens = 0;           // tokens of its admission served by the prefix cache
  // Prompt logprobs: scores[i] is prompt token first_scored + i (its id in `token`) under the logits of the
  // positions before it, with the top Request::prompt_logprobs alternatives. Empty when none this step.
  int64_t first_scored = 0;
  std::vector<SampleResult> scores;
};

}  // namespace ds
