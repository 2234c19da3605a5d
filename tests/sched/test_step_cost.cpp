// The step cost model (sched/cost_model.h) and the scheduler under it: chunks shrink as a prompt's
// context grows, every step stays within the cost budget (the one forced minimum chunk aside), a long
// prefill progresses every step, and decodes beside it run every step. No backend.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <numeric>

#include "core/error.h"
#include "sched/cost_model.h"
#include "sched/scheduler.h"

namespace ds::test {
namespace {

TEST(StepCost, CostFormulaAndDefaults) {
  StepCost c(StepCostConfig{}, 8192);
  EXPECT_NEAR(c.config().per_pair, 143360.0 / 5.46e9, 1e-12);
  // 3 new tokens after 10: 3 + per_pair (3·10 + 3·4/2).
  EXPECT_DOUBLE_EQ(c.cost(3, 10), 3 + c.config().per_pair * 36);
  EXPECT_DOUBLE_EQ(c.cost(0, 1000), 0.0);
  // The default budget: max_num_batched_tokens at context 8,192.
  EXPECT_DOUBLE_EQ(c.budget(), c.cost(8192, 8192));
  StepCostConfig fixed;
  fixed.max_step_cost = 5000;
  EXPECT_DOUBLE_EQ(StepCost(fixed, 8192).budget(), 5000);
  for (auto bad : {StepCostConfig{.per_token = 0}, StepCostConfig{.per_pair = -1},
                   StepCostConfig{.per_pair = NAN}, StepCostConfig{.max_step_cost = -2},
                   StepCostConfig{.min_prefill_chunk = 0}, StepCostConfig{.reference_context = -1}})
    EXPECT_THROW(StepCost(bad, 2048), Error);
}

TEST(StepCost, MaxTokensIsTheLargestChunkWithinBudget) {
  StepCostConfig cfg;
  cfg.per_pair = 0.01;  // large, so that the quadratic term matters at small sizes
  StepCost c(cfg, 100);
  for (int64_t context : {0, 1, 37, 1000, 100000})
    for (double budget : {0.5, 1.0, 7.0, 55.5, 300.0, 1e4})
      for (int64_t cap : {0, 1, 50, 100000}) {
        const int64_t n = c.max_tokens(budget, context, cap);
        ASSERT_GE(n, 0);
        ASSERT_LE(n, cap);
        if (n > 0) {
          EXPECT_LE(c.cost(n, context), budget) << context << " " << budget << " " << cap;
        }
        if (n < cap) {
          EXPECT_GT(c.cost(n + 1, context), budget) << context << " " << budget << " " << cap;
        }
      }
  // Without the pair term, the budget in tokens.
  StepCost linear(StepCostConfig{.per_pair = 0}, 100);
  EXPECT_EQ(linear.max_tokens(100, 1 << 20, 1000), 100);
}

Request prompt_of(int64_t len, int max_tokens) {
  Request r;
  r.prompt.assign(size_t(len), 7);
  r.max_tokens = max_tokens;
  return r;
}

// Runs one plan: every sampled row gets token 1 (never a stop token here).
void run(Scheduler& s, const StepPlan& plan) {
  StepResult res;
  res.samples.resize(plan.sampling.size(), SampleResult{});
  for (auto& x : res.samples) x.token = 1;
  s.update(plan, res);
}

double plan_cost(const StepCost& c, const StepPlan& p) {
  double sum = 0;
  for (const auto& sl : p.batch.seqs) sum += c.cost(sl.num_tokens, sl.context_len);
  return sum;
}

// Below the reference context the token budget alone binds: chunks are the token budget, as before.
TEST(SchedulerCost, ShortContextsChunkByTokens) {
  SchedulerConfig cfg;
  cfg.max_num_batched_tokens = 128;
  cfg.max_model_len = 8192;
  cfg.num_blocks = 0;
  cfg.block_size = 0;
  Scheduler s(cfg);
  s.add(prompt_of(1000, 2));
  for (int i = 0; i < 7; ++i) {
    StepPlan p = s.schedule();
    ASSERT_EQ(p.batch.seqs.size(), 1u);
    EXPECT_EQ(p.batch.seqs[0].num_tokens, 128);
    run(s, p);
  }
}

struct LongRun {
  int64_t steps = 0;       // steps until the long prompt's first token
  double modelled = 0;     // Σ step cost until then (a proxy of its TTFT)
  int64_t max_gap = 0;     // most consecutive steps a decoding chat went without a token
};

// One 1,048,000-token prompt (no paging) and, optionally, 8 chats of 1,000 in / 500 out submitted once it
// has prefilled `chats_at` tokens. Checks every step's invariants.
LongRun long_prompt(int chats_at, int max_num_batched_tokens) {
  SchedulerConfig cfg;
  cfg.max_num_batched_tokens = max_num_batched_tokens;
  cfg.max_model_len = 1 << 21;
  cfg.num_blocks = 0;
  cfg.block_size = 0;
  cfg.max_num_seqs = 16;
  cfg.num_state_slots = 16;
  Scheduler s(cfg);
  const StepCost cost(cfg.cost, cfg.max_num_batched_tokens);
  const uint64_t id = s.add(prompt_of(1048000, 32));
  std::vector<uint64_t> chats;
  std::map<uint64_t, int64_t> last_token;  // chat -> step of its last sampled token
  LongRun out;
  int64_t prev = 0;
  for (int64_t step = 0; s.get(id)->output.empty(); ++step) {
    if (chats_at >= 0 && chats.empty() && s.get(id)->num_computed >= chats_at)
      for (int i = 0; i < 8; ++i) chats.push_back(s.add(prompt_of(1000, 500)));
    StepPlan p = s.schedule();
    const double c = plan_cost(cost, p);
    // Within the budget, unless the step's first prefill chunk was raised to the minimum.
    bool forced = false;
    for (size_t i = 0; i < p.scheduled.size(); ++i)
      if (!p.scheduled[i].decode) {
        forced = p.batch.seqs[i].num_tokens <= cost.min_prefill_chunk();
        break;
      }
    EXPECT_TRUE(c <= cost.budget() * (1 + 1e-12) || forced) << "step " << step << " cost " << c;
    EXPECT_LE(p.batch.num_tokens(), cfg.max_num_batched_tokens);
    out.modelled += c;
    ++out.steps;
    run(s, p);
    // The long prefill progresses every step.
    EXPECT_GT(s.get(id)->num_computed, prev) << "step " << step;
    if (s.get(id)->num_computed <= prev) break;
    prev = s.get(id)->num_computed;
    for (uint64_t ch : chats) {
      const Request* r = s.get(ch);
      if (!r || r->output.empty()) continue;
      if (last_token.count(ch) && r->output.size() > 1)
        out.max_gap = std::max(out.max_gap, step - last_token[ch]);
      bool sampled = false;
      for (const auto& q : p.scheduled) sampled |= q.request_id == ch && q.sample;
      if (sampled) last_token[ch] = step;
    }
  }
  return out;
}

TEST(SchedulerCost, LongPrefillBesideDecodes) {
  const LongRun alone = long_prompt(-1, 8192);
  const LongRun beside = long_prompt(100000, 8192);
  std::printf("  1,048,000-token prompt, 8192-token budget: alone %lld steps (cost %.3g), beside 8 chats %lld "
              "steps (cost %.3g), longest decode gap %lld steps\n",
              (long long)alone.steps, alone.modelled, (long long)beside.steps, beside.modelled,
              (long long)beside.max_gap);
  // Chats decode every step once admitted (their 1,000-token prompts take one step each).
  EXPECT_LE(beside.max_gap, 1);
  // The long prompt still finishes near its alone time (modelled as steps and as total cost).
  EXPECT_LE(double(beside.steps), 1.15 * double(alone.steps));
  EXPECT_LE(beside.modelled, 1.15 * alone.modelled);
  // And the cost model really shrank its chunks: far more steps than tokens / budget.
  EXPECT_GT(alone.steps, 1048000 / 8192 * 5);
}

}  // namespace
}  // namespace ds::test
