// The cost of a step, so that a long prompt prefilled beside latency-sensitive work (decodes, requests
// waiting for their first token) gets chunks that keep the step short, while a prompt alone takes whole
// token-budget chunks (docs/SCHEDULER.md, "Step cost", has the arithmetic behind every default).
//
// Unit: the matmul work of one token (5.46 GFLOP for the 48B model) at the measured prefill rate (~330
// TFLOP/s on an H200): 16.5 µs (StepCostConfig::unit_seconds). A step costs
//   per_step                                                  (one read of all weights, ~22 ms)
//   + Σ decodes   per_token + per_pair · (context + 1)
//   + Σ chunks    per_token · n + per_pair · (n · context + n (n + 1) / 2) + per_key · (context + n)
// pairs: the query-key pairs of a chunk's causal attention (new token i attends context + i + 1 positions);
// per_key: a prefill chunk (n >= 2; a one-token slice is a decode: absorbed attention, nothing expanded)
// re-expands every key it attends, context included, through kv_b_proj (CudaModel's MLA prefill).
// The budget (max_step_cost) bounds the steps that have latency-sensitive work in them; its default,
// 12,000 units ≈ 198 ms, keeps inter-token latency beside a long prefill under 250 ms.
#pragma once
#include <cstdint>

#include "model/forward_batch.h"

namespace ds {

struct StepCostConfig {
  double per_token = 1.0;
  double per_pair = (143360.0 / 420e12) / (5.46e9 / 330e12);  // 2.063e-5: MLA attention at ~420 TFLOP/s
  double per_key = 7.0 * 2 * 512 * 8192 / 5.46e9;             // 0.01075: kv_b_proj of one key, 7 MLA layers
  double per_step = 0.022 / (5.46e9 / 330e12);                // 1,330: all 256 experts' weights read once
  double max_step_cost = 0;          // the budget of a step with latency-sensitive work (0: kDefaultBudget)
  int min_prefill_chunk = 32;        // the first prefill chunk of a step gets at least this many tokens
                                     // (within the token budget and its pages), whatever the cost
  int long_prefill_interval = 3;     // while requests decode, a long prefill joins one step in this many
                                     // (1: every step; 3 measured beside a 1M prompt, docs/SCHEDULER.md)
  double unit_seconds = 5.46e9 / 330e12;  // seconds of one unit on an H200 (simulation clock, logs)
  static constexpr double kDefaultBudget = 12000;  // ≈ 198 ms
};

class StepCost {
 public:
  // Validates the config (finite, >= 0 costs; per_token > 0; the budget above per_step;
  // min_prefill_chunk >= 1).
  StepCost(const StepCostConfig& cfg, int max_num_batched_tokens);

  // A slice of n new tokens after `context` cached ones (n == 1: a decode).
  double cost(int64_t n, int64_t context) const;
  // A whole step: per_step plus its slices (0 for an empty batch).
  double step_cost(const ForwardBatch& b) const;
  // The largest n in [0, cap] with cost(n, context) <= budget.
  int64_t max_tokens(double budget, int64_t context, int64_t cap) const;
  double budget() const { return budget_; }                           // a whole step
  double chunk_budget() const { return budget_ - cfg_.per_step; }     // its slices
  double seconds(double units) const { return units * cfg_.unit_seconds; }
  int min_prefill_chunk() const { return cfg_.min_prefill_chunk; }
  const StepCostConfig& config() const { return cfg_; }

 private:
  StepCostConfig cfg_;
  double budget_ = 0;
};

}  // namespace ds
