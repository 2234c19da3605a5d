#include "sched/cost_model.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace ds {

StepCost::StepCost(const StepCostConfig& cfg, int max_num_batched_tokens) : cfg_(cfg) {
  DS_CHECK(std::isfinite(cfg.per_token) && cfg.per_token > 0, "step cost: per_token must be > 0, got {}",
           cfg.per_token);
  DS_CHECK(std::isfinite(cfg.per_pair) && cfg.per_pair >= 0, "step cost: per_pair must be >= 0, got {}",
           cfg.per_pair);
  DS_CHECK(cfg.reference_context >= 0, "step cost: reference_context must be >= 0, got {}", cfg.reference_context);
  DS_CHECK(std::isfinite(cfg.max_step_cost) && cfg.max_step_cost >= 0,
           "step cost: max_step_cost must be >= 0 (0: derived), got {}", cfg.max_step_cost);
  DS_CHECK(cfg.min_prefill_chunk >= 1, "step cost: min_prefill_chunk must be >= 1, got {}", cfg.min_prefill_chunk);
  DS_CHECK(max_num_batched_tokens >= 1, "step cost: max_num_batched_tokens must be >= 1");
  budget_ = cfg.max_step_cost > 0 ? cfg.max_step_cost : cost(max_num_batched_tokens, cfg.reference_context);
}

double StepCost::cost(int64_t n, int64_t context) const {
  const double dn = double(n), pairs = dn * double(context) + dn * (dn + 1) / 2;
  return cfg_.per_token * dn + cfg_.per_pair * pairs;
}

int64_t StepCost::max_tokens(double budget, int64_t context, int64_t cap) const {
  if (cap <= 0 || budget < cost(1, context)) return 0;
  if (cost(cap, context) <= budget) return cap;
  // cost is increasing in n: (per_pair / 2) n² + (per_token + per_pair (context + 1/2)) n - budget = 0.
  const double A = cfg_.per_pair / 2, B = cfg_.per_token + cfg_.per_pair * (double(context) + 0.5);
  double root = A > 0 ? (-B + std::sqrt(B * B + 4 * A * budget)) / (2 * A) : budget / B;
  int64_t n = std::clamp<int64_t>(int64_t(root), 1, cap);
  while (n > 1 && cost(n, context) > budget) --n;           // rounding of the root, either way
  while (n < cap && cost(n + 1, context) <= budget) ++n;
  return n;
}

}  // namespace ds
