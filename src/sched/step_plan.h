// The scheduler's side of a step: the StepPlan / StepResult it exchanges with the backend (model/step.h)
// and what a step did to each request.
#pragma once
#include <cstdint>

#include "model/step.h"
#include "sched/request.h"

namespace ds {

// What a step did to one request that sampled a token.
struct RequestUpdate {
  uint64_t request_id = 0;
  SampleResult sample;                 // the new token and its logprobs
  RequestStatus status = RequestStatus::Running;  // Running, or why it finished
  int64_t cached_tokens = 0;           // tokens of its admission served by the prefix cache
};

}  // namespace ds
