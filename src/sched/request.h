// A generation request as the scheduler sees it: plain data, no I/O. The scheduler follows one
// rule for every phase: `num_computed` (tokens whose state is in the caches) catches up with
// `num_tokens()` (prompt + output). A decode is the case num_tokens() - num_computed == 1: the last
// sampled token still has to be fed. Preemption by recompute only resets num_computed to 0 (the
// prompt + output so far become the next prefill), so chunked prefill, decode and resumption after
// preemption are one code path.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "sampling/sampling_params.h"

namespace ds {

enum class RequestStatus : uint8_t {
  Waiting,          // queued (new or preempted); holds no slot and no pages
  Running,          // holds a state slot and pages for [0, num_computed)
  FinishedStopped,  // sampled a stop token (or the engine matched a stop string)
  FinishedLength,   // max_tokens or max_model_len reached
  FinishedAborted,
  FinishedError,
};

inline bool is_finished(RequestStatus s) { return s >= RequestStatus::FinishedStopped; }

struct Request {
  uint64_t id = 0;                      // assigned by Scheduler::add, increasing with arrival
  std::vector<int32_t> prompt;          // [prompt_len]
  std::vector<int32_t> output;          // tokens sampled so far
  SampleParams sampling;                // seed/temperature/penalties...
  int max_tokens = 16;                  // output length limit
  std::vector<int32_t> stop_token_ids;  // sampling one of these finishes with FinishedStopped
  int64_t priority = 0;                 // SchedulingPolicy::Priority: lower values are served first
  // >= 0: score the prompt (vLLM prompt_logprobs): every prompt token after the first gets its logprob under
  // the logits of the position before it, with this many top alternatives (RequestUpdate::scores). Its
  // prefill chunks then produce a logits row per token (capped by SchedulerConfig::max_logit_rows) and it is
  // never served from the prefix cache (cached tokens have no logits).
  int prompt_logprobs = -1;

  // Scheduler state.
  RequestStatus status = RequestStatus::Waiting;
  int64_t num_computed = 0;             // tokens already in the caches
  int32_t state_slot = -1;              // KDA slot while running
  std::vector<int32_t> blocks;          // MLA pages while running, covering [0, num_computed)
  int num_preemptions = 0;
  bool history_sent = false;            // the backend holds this request's penalty history (sent with
                                        // its first sample since admission; dropped when released)
  // Prefix caching (sched/prefix_cache.h).
  std::vector<uint64_t> block_hashes;   // hash chain of the full blocks of prompt + output so far
  int num_registered = 0;               // leading pages registered under their hashes (while running)
  std::vector<int64_t> checkpoints;     // positions where a prefill chunk ends and the state is saved
  int64_t num_cached_tokens = 0;        // tokens of the last admission served from the cache
  int32_t restore_snapshot = -1;        // the admission's hit, applied by its first slice
  int32_t tail_src_block = -1;
  int32_t tail_rows = 0;

  int64_t num_tokens() const { return int64_t(prompt.size() + output.size()); }
  int64_t num_remaining() const { return num_tokens() - num_computed; }
  // Its next prefill chunk scores prompt tokens (prompt_logprobs), one logits row a token. The prompt's last
  // position samples the first output token, so once there is output every score was reported (a recompute
  // after a preemption scores none again).
  bool scoring() const { return prompt_logprobs >= 0 && output.empty() && num_computed < int64_t(prompt.size()); }
  int32_t token_at(int64_t i) const {
    return i < int64_t(prompt.size()) ? prompt[size_t(i)] : output[size_t(i - int64_t(prompt.size()))];
  }
};

}  // namespace ds
