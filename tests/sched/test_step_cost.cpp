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
  const StepCostConfig& k = c.config();
  // The defaults from the measured H200 rates (docs/SCHEDULER.md, "Step cost"): a unit is one token's
  // 5.46 GFLOP of matmuls at 330 TFLOP/s; attention 143,360 FLOP per pair at 420 TFLOP/s; kv_b_proj
  // 7 x 2 x 512 x 8192 FLOP per key at the matmul rate; 22 ms of weight reads per step.
  EXPECT_NEAR(k.unit_seconds, 16.545e-6, 1e-8);
  EXPECT_NEAR(k.per_pair * k.unit_seconds, 143360.0 / 420e12, 1e-15);
  EXPECT_NEAR(k.per_key, 58720256.0 / 5.46e9, 1e-12);
  EXPECT_NEAR(c.seconds(k.per_step), 0.022, 1e-12);
  EXPECT_DOUBLE_EQ(c.budget(), 12000);
  EXPECT_NEAR(c.seconds(c.budget()), 0.1985, 1e-3);
  EXPECT_DOUBLE_EQ(c.chunk_budget(), 12000 - k.per_step);
  // 3 new tokens after 10: 3 + per_pair (3·10 + 3·4/2) + per_key (10 + 3) keys expanded.
  EXPECT_DOUBLE_EQ(c.cost(3, 10), 3 + k.per_pair * 36 + k.per_key * 13);
  // A decode (one token) expands nothing: absorbed attention over its context.
  EXPECT_DOUBLE_EQ(c.cost(1, 1000), 1 + k.per_pair * 1001);
  EXPECT_DOUBLE_EQ(c.cost(0, 1000), 0.0);
  // A step: the fixed cost plus its slices; nothing for an empty batch.
  ForwardBatch b;
  EXPECT_DOUBLE_EQ(c.step_cost(b), 0.0);
  b.add(0, 1000, std::vector<int32_t>(1, 5), {});
  b.add(1, 10, std::vector<int32_t>(3, 5), {});
  EXPECT_DOUBLE_EQ(c.step_cost(b), k.per_step + c.cost(1, 1000) + c.cost(3, 10));
  StepCostConfig fixed;
  fixed.max_step_cost = 5000;
  EXPECT_DOUBLE_EQ(StepCost(fixed, 8192).budget(), 5000);
  for (auto bad : {StepCostConfig{.per_token = 0}, StepCostConfig{.per_pair = -1},
                   StepCostConfig{.per_pair = NAN}, StepCostConfig{.per_key = -1}, StepCostConfig{.per_step = NAN},
                   StepCostConfig{.max_step_cost = -2}, StepCostConfig{.max_step_cost = 1000},  // under per_step
                   StepCostConfig{.min_prefill_chunk = 0}, StepCostConfig{.unit_seconds = 0}})
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
  // Without the pair and key terms, the budget in tokens.
  StepCost linear(StepCostConfig{.per_pair = 0, .per_key = 0, .per_step = 0}, 100);
  EXPECT_EQ(linear.max_tokens(100, 1 << 20, 1000), 100);
  // The expansion makes a second token cost a jump at long context: a decode-sized budget gives one token.
  StepCost dflt(StepCostConfig{}, 8192);
  const double one = dflt.cost(1, 1 << 20);
  EXPECT_EQ(dflt.max_tokens(one, 1 << 20, 8192), 1);
  EXPECT_GT(dflt.cost(2, 1 << 20), one + 10000);
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

// A prompt alone chunks by tokens, whatever its context.
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

// A chunk cut at a prefix-cache checkpoint is charged for the tokens that run, not for the cost-bounded
// size before the cut (session 5 review: the scheduler charged before PrefixCache::clip_chunk), so the
// request behind it gets the cost left.
TEST(SchedulerCost, ChunkCutAtACheckpointIsChargedForWhatRuns) {
  SchedulerConfig cfg;
  cfg.max_num_batched_tokens = 64;
  cfg.max_model_len = 400;
  cfg.num_blocks = 64;
  cfg.block_size = 16;
  cfg.max_num_seqs = cfg.num_state_slots = 4;
  cfg.prefix.enabled = true;
  cfg.prefix.num_snapshots = 4;
  cfg.prefix.snapshot_interval = 32;
  cfg.cost = StepCostConfig{.per_pair = 0, .per_key = 0, .per_step = 0, .max_step_cost = 41};  // cost = tokens
  Scheduler s(cfg);
  Request d;  // decodes beside the prefills, so that the cost budget binds
  d.prompt = {1, 2, 3, 4};
  d.max_tokens = 100;
  const uint64_t dec = s.add(d);
  run(s, s.schedule());
  Request a, c;
  a.prompt.assign(300, 7);
  c.prompt.assign(300, 9);  // no common prefix: c does not wait for a's checkpoints
  a.max_tokens = c.max_tokens = 1;
  const uint64_t ia = s.add(a), ic = s.add(c);
  const StepPlan p = s.schedule();
  // The decode (1), then a: 40 tokens fit the 40 left, cut to 32 at its first checkpoint; c gets the 8 left.
  ASSERT_EQ(p.scheduled.size(), 3u);
  EXPECT_EQ(p.scheduled[0].request_id, dec);
  EXPECT_EQ(p.scheduled[1].request_id, ia);
  EXPECT_EQ(p.scheduled[1].num_tokens, 32);
  EXPECT_EQ(p.scheduled[2].request_id, ic);
  EXPECT_EQ(p.scheduled[2].num_tokens, 8);
}

// A long prefill beside requests waiting for admission leaves them half the step (tokens and cost), and
// takes the whole token budget once they run... as long as nothing decodes beside it.
TEST(SchedulerCost, LongPrefillLeavesAdmissionsHalfTheStep) {
  SchedulerConfig cfg;
  cfg.max_num_batched_tokens = 100;
  cfg.max_model_len = 4096;
  cfg.num_blocks = 0;
  cfg.block_size = 0;
  cfg.cost = StepCostConfig{.per_pair = 0, .per_key = 0, .per_step = 0, .max_step_cost = 1000};
  Scheduler s(cfg);
  Request lng, sh;
  lng.prompt.assign(1000, 7);
  lng.max_tokens = 1;
  const uint64_t il = s.add(lng);
  StepPlan p = s.schedule();
  ASSERT_EQ(p.scheduled.size(), 1u);
  EXPECT_EQ(p.scheduled[0].num_tokens, 100);  // alone: the token budget
  run(s, p);
  sh.prompt.assign(80, 3);
  sh.max_tokens = 1;
  const uint64_t is = s.add(sh);
  p = s.schedule();
  ASSERT_EQ(p.scheduled.size(), 2u);
  EXPECT_EQ(p.scheduled[0].request_id, il);
  EXPECT_EQ(p.scheduled[0].num_tokens, 50);  // half the token budget
  EXPECT_EQ(p.scheduled[1].request_id, is);
  EXPECT_EQ(p.scheduled[1].num_tokens, 50);
  run(s, p);
  p = s.schedule();  // the short one still prefills (30 tokens: latency-sensitive); the long one gets the rest
  ASSERT_EQ(p.scheduled.size(), 2u);
  EXPECT_EQ(p.scheduled[0].num_tokens, 70);
  EXPECT_EQ(p.scheduled[1].num_tokens, 30);
}

}  // namespace
}  // namespace ds::test
