// The contract between the scheduler and whoever runs a step (the engine with a Backend): a
// plain-data StepPlan going down and a StepResult coming back.
#pragma once
#include <cstdint>
#include <vector>

#include "model/forward_batch.h"
#include "sampling/sampling_params.h"
#include "sched/request.h"

namespace ds {

struct ScheduledSeq {
  uint64_t request_id = 0;
  int32_t num_tokens = 0;  // tokens of this request in the step (1 for a decode)
  bool sample = false;     // produces a logits row and a new token (false: a middle prefill chunk)
  bool decode = false;     // the single-token case num_remaining() == 1
};

struct StepPlan {
  ForwardBatch batch;                  // batch.seqs[i] belongs to scheduled[i]
  std::vector<ScheduledSeq> scheduled;
  // One per logits row, in row order (= the scheduled entries with sample == true). The token
  // pointers refer to the scheduler's requests and stay valid until update().
  std::vector<SampleParams> sampling;
  std::vector<uint64_t> preempted;     // requests sent back to the waiting queue while planning
  int num_prefill_tokens = 0;
  int num_decode_tokens = 0;

  bool empty() const { return scheduled.empty(); }
};

struct StepResult {
  std::vector<SampleResult> samples;   // one per logits row (StepPlan::sampling)
};

// What a step did to one request that sampled a token.
struct RequestUpdate {
  uint64_t request_id = 0;
  SampleResult sample;                 // the new token and its logprobs
  RequestStatus status = RequestStatus::Running;  // Running, or why it finished
};

}  // namespace ds
