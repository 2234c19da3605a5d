// The contract between whoever plans a step (the scheduler) and the Backend that runs it: a plain-data
// StepPlan going down (the batch, one sampling row per logits row, the sequences released since the last
// step) and a StepResult coming back (one sample per row; the logits rows when asked for). Only ids and
// values: nothing points into the planner's requests.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "model/forward_batch.h"
#include "sampling/penalties.h"
#include "sampling/sampling_params.h"
#include "sampling/token_mask.h"

namespace ds {

struct ScheduledSeq {
  uint64_t request_id = 0;
  int32_t num_tokens = 0;  // tokens of this request in the step (1 for a decode)
  bool sample = false;     // produces a logits row and a new token (false: a middle prefill chunk)
  bool decode = false;     // the single-token case num_remaining() == 1
  int32_t score_rows = 0;  // logits rows before the sampled one that score prompt tokens (prompt logprobs):
                           // the slice then has a row per token (logits_all)
};

struct StepPlan {
  ForwardBatch batch;                  // batch.seqs[i] belongs to scheduled[i] (when planned by the scheduler)
  std::vector<ScheduledSeq> scheduled;
  // One per logits row, in row order (= the scheduled entries with sample == true). May be empty
  // when return_logits is set (score: logits only, nothing sampled).
  std::vector<SeqSampling> sampling;
  // Sequences whose sampling state (penalty history) the backend drops before this step's samples:
  // finished or preempted since the last plan that ran (an empty plan carries none).
  std::vector<uint64_t> released;
  std::vector<uint64_t> preempted;     // requests sent back to the waiting queue while planning
  int num_prefill_tokens = 0;
  int num_decode_tokens = 0;
  bool return_logits = false;          // tests and tools: StepResult::logits gets the rows
  bool forward_only = false;           // a tensor-parallel rank beside rank 0: the forward alone (its
                                       // collectives), nothing sampled or returned (sampling stays empty)
  // Token masks of the sampling rows (null: none constrained). The backend calls masks->wait() before
  // sampling and samples each row r with masks->has(r) among its allowed tokens only.
  std::shared_ptr<const StepMasks> masks;

  bool empty() const { return scheduled.empty() && batch.seqs.empty() && batch.saves_before.empty(); }
};

struct StepResult {
  std::vector<SampleResult> samples;   // one per StepPlan::sampling row
  std::vector<float> logits;           // [rows, vocab] fp32 when StepPlan::return_logits
  // Snapshots saved by this step (saves_before or save_snapshot) that hold a NaN or an infinity: the
  // planner must never restore them.
  std::vector<int32_t> nonfinite_snapshots;
};

// What a backend can take in one step, and its caches: the engine reads them once at start and
// configures the scheduler (the only place that chunks) within them. 0 in a max_*: no limit.
struct BackendLimits {
  int max_tokens_per_step = 0;  // tokens in one batch (the workspace's size on the GPU)
  int max_seqs_per_step = 0;    // slices in one batch
  int max_logit_rows = 0;       // logits rows of one batch
  int num_state_slots = 0;      // KDA state slots (one per running sequence)
  int num_snapshots = 0;        // KDA state snapshots (parked copies of a slot's state)
  int num_blocks = 0;           // MLA latent-cache pages
  int block_size = 0;           // tokens per page
  int64_t max_context = 0;      // longest sequence one step can attend over (0: no limit of its own); on the GPU
                                // the max_model_len its step metadata was planned for
  std::vector<int> graph_buckets;  // decode batch sizes replayed from captured graphs (empty: none)
};

}  // namespace ds
