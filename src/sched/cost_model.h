// The cost of a step's prefill work, so that a long prompt's chunks shrink as its context grows and the
// requests decoding beside it keep streaming (docs/SCHEDULER.md, "Step cost").
//
// A chunk of n new tokens after `context` cached ones costs, in token-equivalents,
//   cost(n, context) = per_token · n + per_pair · pairs,   pairs = n · context + n (n + 1) / 2
// (pairs: the query-key pairs of its causal attention: new token i attends context + i + 1 positions).
// A decode is the chunk n = 1. per_token = 1 makes a token of dense/MoE work the unit; per_pair defaults to
// the 48B model's ratio: MLA attention 143,360 FLOP per query-key pair (7 layers × 32 heads × 2 × (192 + 128))
// over 5.46 GFLOP of matmuls per token = 2.6256e-5 (docs/PERF.md). A step's cost budget defaults to the cost
// of max_num_batched_tokens new tokens at context reference_context (8,192), so the token budget alone binds
// below that context and the cost budget beyond it.
#pragma once
#include <cstdint>

namespace ds {

struct StepCostConfig {
  double per_token = 1.0;
  double per_pair = 143360.0 / 5.46e9;
  int64_t reference_context = 8192;  // where the default budget starts to bind
  double max_step_cost = 0;          // token-equivalents per step (0: derived, see above)
  int min_prefill_chunk = 32;        // the first prefill chunk of a step gets at least this many tokens
                                     // (within the token budget and its pages), whatever the cost
};

class StepCost {
 public:
  // Validates the config (finite, >= 0 costs; per_token > 0; min_prefill_chunk >= 1) and derives the budget.
  StepCost(const StepCostConfig& cfg, int max_num_batched_tokens);

  double cost(int64_t n, int64_t context) const;
  // The largest n in [0, cap] with cost(n, context) <= budget.
  int64_t max_tokens(double budget, int64_t context, int64_t cap) const;
  double budget() const { return budget_; }
  int min_prefill_chunk() const { return cfg_.min_prefill_chunk; }
  const StepCostConfig& config() const { return cfg_; }

 private:
  StepCostConfig cfg_;
  double budget_ = 0;
};

}  // namespace ds
