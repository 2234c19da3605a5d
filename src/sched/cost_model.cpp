#include "sched/cost_model.h"

#include <cmath>

#include "core/error.h"

namespace ds {

StepCost::StepCost(const StepCostConfig& cfg, int max_num_batched_tokens) : cfg_(cfg) {
  auto nonneg = [](double v) { return std::isfinite(v) && v >= 0; };
  DS_CHECK(std::isfinite(cfg.per_token) && cfg.per_token > 0, "step cost: per_token must be > 0, got {}",
           cfg.per_token);
  DS_CHECK(nonneg(cfg.per_pair), "step cost: per_pair must be >= 0, got {}", cfg.per_pair);
  DS_CHECK(nonneg(cfg.per_key), "step cost: per_key must be >= 0, got {}", cfg.per_key);
  DS_CHECK(nonneg(cfg.per_step), "step cost: per_step must be >= 0, got {}", cfg.per_step);
  DS_CHECK(nonneg(cfg.max_step_cost), "step cost: max_step_cost must be >= 0 (0: the default), got {}",
           cfg.max_step_cost);
  DS_CHECK(std::isfinite(cfg.unit_seconds) && cfg.unit_seconds > 0, "step cost: unit_seconds must be > 0");
  DS_CHECK(cfg.long_prefill_interval >= 1, "step cost: long_prefill_interval must be >= 1, got {}",
           cfg.long_prefill_interval);
  DS_CHECK(cfg.min_prefill_chunk >= 1, "step cost: min_prefill_chunk must be >= 1, got {}", cfg.min_prefill_chunk);
  DS_CHECK(max_num_batched_tokens >= 1, "step cost: max_num_batched_tokens must be >= 1");
  budget_ = cfg.max_step_cost > 0 ? cfg.max_step_cost : StepCostConfig::kDefaultBudget;
  DS_CHECK(budget_ > cfg.per_step, "step cost: the budget {} must exceed the fixed cost of a step ({})", budget_,
           cfg.per_step);
}

double StepCost::cost(int64_t n, int64_t context) const {
  if (n <= 0) return 0;
  const double dn = double(n), pairs = dn * double(context) + dn * (dn + 1) / 2;
  const double expand = n >= 2 ? cfg_.per_key * double(context + n) : 0.0;
  return cfg_.per_token * dn + cfg_.per_pair * pairs + expand;
}

double StepCost::step_cost(const ForwardBatch& b) const {
  if (b.seqs.empty()) return 0;
  double sum = cfg_.per_step;
  for (const SeqSlice& s : b.seqs) sum += cost(s.num_tokens, s.context_len);
  return sum;
}

int64_t StepCost::max_tokens(double budget, int64_t context, int64_t cap) const {
  if (cap <= 0 || budget < cost(1, context)) return 0;
  if (cost(cap, context) <= budget) return cap;
  int64_t lo = 1, hi = cap;  // cost(lo) <= budget < cost(hi); cost increases with n
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    (cost(mid, context) <= budget ? lo : hi) = mid;
  }
  return lo;
}

}  // namespace ds
