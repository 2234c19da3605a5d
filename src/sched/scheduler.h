// Continuous-batching scheduler. Each step (schedule -> forward -> update) mixes single-token decodes
// with prefill chunks under a token budget and, when latency-sensitive work is in the step, a cost budget
// (sched/cost_model.h: attention over the context and the re-expansion of its keys count, so a long
// prompt's chunks shrink as it grows while decodes beside it keep streaming; alone, it takes whole
// token-budget chunks):
//   1. decodes of running requests, oldest first, one token each;
//   2. the next prefill chunk of running requests that are still prefilling, oldest first (a long one
//      leaves half the step to admissions when requests wait);
//   3. new (or preempted) requests from the front of the waiting queue, while a state slot, pages
//      for their first chunk and budget remain, keeping one free page per running request in
//      reserve (nothing is admitted in a step that preempted).
// A long prompt is split over several steps; middle chunks carry the KDA state (context_len > 0)
// and produce no logits. When a running request needs a page and none is free, the youngest
// running request not yet placed in this step is preempted by recompute: its slot and pages are
// freed and it goes back to the front of the waiting queue with num_computed = 0 (prompt + output
// become its next prefill). Seeded sampling is keyed by (seed, output index), so its tokens do not
// change. Sampling rows carry the request id; a request with penalties sends its token history once
// per admission (the backend then keeps it) and is listed in the next plan's `released` when it
// finishes or is preempted. A fresh sequence, or one preempted by recompute, starts with
// StateInit::Zero. With prefix caching (SchedulerConfig::prefix, sched/prefix_cache.h) an admission
// may resume from a cached prefix (shared pages + StateInit::RestoreSnapshot), prefill chunks end at
// checkpoints, and snapshots are saved after chunks and for finished requests (saves_before).
// With SchedulingPolicy::Priority (vLLM's --scheduling-policy priority) "oldest" above reads "most urgent":
// the waiting queue and the running list are ordered by (priority, arrival), lower first, so admissions
// take the most urgent waiting request, decodes and chunks are placed most urgent first, and a request
// that needs a page preempts the least urgent running request not yet placed (the youngest among equals).
// A preempted request rejoins the waiting queue at its place in that order.
// No CUDA, no storage: only ids and counts.
#pragma once
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "cache/block_pool.h"
#include "cache/state_slot_pool.h"
#include "sched/cost_model.h"
#include "sched/prefix_cache.h"
#include "sched/request.h"
#include "sched/step_plan.h"

namespace ds {

enum class SchedulingPolicy : uint8_t { Fcfs, Priority };

struct SchedulerConfig {
  int max_num_seqs = 64;              // running requests at once (capped by num_state_slots)
  int max_num_batched_tokens = 2048;  // tokens per step, decodes + prefill chunks
  int64_t max_model_len = 4096;       // prompt + output; must fit in the page pool
  int num_state_slots = 64;
  int num_blocks = 0;                 // MLA pages (block_size <= 0: no paging)
  int block_size = 16;
  StepCostConfig cost;                // prefill chunks bounded by cost too (sched/cost_model.h)
  PrefixCacheConfig prefix;           // prefix caching (off unless enabled; sched/prefix_cache.h)
  SchedulingPolicy policy = SchedulingPolicy::Fcfs;
  int max_logit_rows = 0;             // logits rows per step (the backend's; 0: no limit): bounds the chunks of
                                      // requests that score their prompt (a row per token)
};

class Scheduler {
 public:
  explicit Scheduler(const SchedulerConfig& cfg);

  // Queues a request (its scheduler state is reset) and returns its id. Throws ds::Error for an
  // empty prompt, a prompt longer than max_model_len, or max_tokens < 1.
  uint64_t add(Request req);
  // Ends a request (waiting or running) and frees its slot and pages. Only between update() and the
  // next schedule(). False when the id is unknown (already finished).
  bool abort(uint64_t id) { return finish(id, RequestStatus::FinishedAborted); }
  bool finish(uint64_t id, RequestStatus status);

  // Empties the prefix cache (PrefixCache::reset) when no request is running or waiting; otherwise
  // changes nothing and returns nullopt. Only between update() and the next schedule().
  std::optional<PrefixCacheCleared> reset_prefix_cache();

  StepPlan schedule();
  // Applies a step's samples: advances num_computed, appends tokens, finishes requests that sampled
  // a stop token or reached max_tokens / max_model_len (freeing their memory). Returns one entry per
  // request that sampled a token or scored prompt tokens (RequestUpdate::sampled, ::scores), in row order.
  std::vector<RequestUpdate> update(const StepPlan& plan, const StepResult& result);

  const Request* get(uint64_t id) const;
  const SchedulerConfig& config() const { return cfg_; }
  int num_waiting() const { return int(waiting_.size()); }
  int num_running() const { return int(running_.size()); }
  bool has_work() const { return !waiting_.empty() || !running_.empty() || prefix_.has_saves_before(); }
  // The running request with the most prompt left to prefill: {tokens in the caches, tokens to reach}
  // (num_tokens() of that request); {0, 0} when no running request is prefilling. For progress lines.
  std::pair<int64_t, int64_t> longest_prefill() const;
  int64_t num_preemptions() const { return num_preemptions_; }
  const BlockPool& blocks() const { return blocks_; }
  const StateSlotPool& slots() const { return slots_; }
  const PrefixCache& prefix_cache() const { return prefix_; }

 private:
  Request& req(uint64_t id);
  // Ensures r holds pages for `tokens` positions, preempting younger unplaced requests if needed.
  // False when r itself had to be preempted.
  bool reserve_pages(Request& r, int64_t tokens, StepPlan* plan);
  // Tokens of r's next chunk that its pages plus the free pages (less `reserve`) can hold.
  int64_t tokens_that_fit(const Request& r, int reserve = 0) const;
  // Youngest running request that is not in the plan yet (0 when none).
  uint64_t youngest_unplaced() const;
  void preempt(Request& r, StepPlan* plan);
  void place(Request& r, int32_t num_tokens, StepPlan* plan);
  void release(Request& r);
  void remove_running(uint64_t id);
  // Whether request a goes before request b: arrival (id), or (priority, id) under the priority policy.
  bool before(uint64_t a, uint64_t b);
  // Into the waiting queue at its place: a new request at the back (fcfs) and a preempted one at the
  // front; under the priority policy both by (priority, id).
  void enqueue(uint64_t id, bool preempted);
  RequestStatus check_stop(const Request& r) const;
  // Admission of the waiting request at waiting_[i] (prefix hit, pages, first chunk): false when it
  // waits (for a deeper hit) and true when it was admitted; *stop when admission must stop here.
  bool admit(size_t i, int* budget, double* cost_left, bool* first_prefill, StepPlan* plan, bool* stop);

  // Tokens of r's next prefill chunk: at most `cap`, ending at its next checkpoint (PrefixCache::
  // clip_chunk), within the step's cost left unless `alone` (at least min_prefill_chunk for the step's
  // first chunk); charges their cost.
  int64_t cost_bounded(const Request& r, int64_t cap, double* cost_left, bool first, bool alone) const;
  // A request whose latency the cost budget protects: decoding, or with its first token within one
  // step's token budget. The others are long prefills.
  bool latency_sensitive(const Request& r) const;
  // The front of the waiting queue could be admitted this step (slot, max_num_seqs, a page beyond the reserve).
  bool can_admit() const;
  // Logits rows the plan can still take (max_logit_rows less its rows so far; INT32_MAX without a limit).
  int64_t rows_left(const StepPlan& plan) const;
  // A chunk of at most `cap` tokens for r within the plan's rows: a scoring chunk takes a row a token, one that
  // samples a row; 0 when it cannot run this step.
  int64_t row_capped(const Request& r, int64_t cap, const StepPlan& plan) const;

  SchedulerConfig cfg_;
  StepCost cost_;
  BlockPool blocks_;
  StateSlotPool slots_;
  PrefixCache prefix_;
  std::unordered_map<uint64_t, std::unique_ptr<Request>> requests_;
  std::deque<uint64_t> waiting_;   // front is next
  std::vector<uint64_t> running_;  // sorted by before(): oldest (most urgent) first
  std::unordered_map<uint64_t, int32_t> placed_;  // requests in the plan being built: their tokens in it
  std::vector<uint64_t> released_;       // sent the backend a history, since finished or preempted:
                                         // listed in the next plan's `released`
  uint64_t next_id_ = 1;
  int64_t num_preemptions_ = 0;
  int64_t decode_steps_ = 0;  // steps planned with decodes (StepCostConfig::long_prefill_interval)
};

}  // namespace ds
