#include <gtest/gtest.h>

#include <numeric>
#include <random>

#include "core/error.h"
#include "sched/scheduler.h"
#include "sim.h"

using namespace ds;
using ds::test::Sim;
using ds::test::run_alone;

namespace {

std::vector<int32_t> make_prompt(int n, int start = 1) {
  std::vector<int32_t> p(static_cast<size_t>(n));
  std::iota(p.begin(), p.end(), start);
  return p;
}

Request make_request(int prompt_len, int max_tokens, int start = 1) {
  Request r;
  r.prompt = make_prompt(prompt_len, start);
  r.max_tokens = max_tokens;
  return r;
}

SchedulerConfig config(int max_seqs, int budget, int64_t max_len, int blocks, int block_size) {
  SchedulerConfig c;
  c.max_num_seqs = max_seqs;
  c.max_num_batched_tokens = budget;
  c.max_model_len = max_len;
  c.num_state_slots = max_seqs;
  c.num_blocks = blocks;
  c.block_size = block_size;
  // these tests check chunking and ordering step by step: a long prefill joins every step (the default, 3,
  // is covered by the randomized test below and tests/sched/test_long_prefill.cpp)
  c.cost.long_prefill_interval = 1;
  return c;
}

}  // namespace

TEST(Scheduler, ChunkedPrefillCarriesContextAndSamplesOnlyAtTheEnd) {
  Scheduler s(config(4, 8, 64, 16, 4));
  uint64_t id = s.add(make_request(20, 3));
  Sim sim(s);

  sim.step();  // tokens [0, 8)
  const auto& b1 = sim.last_plan.batch;
  ASSERT_EQ(b1.seqs.size(), 1u);
  EXPECT_EQ(b1.seqs[0].context_len, 0);
  EXPECT_EQ(b1.seqs[0].num_tokens, 8);
  EXPECT_FALSE(b1.seqs[0].need_logits);
  EXPECT_EQ(b1.seqs[0].block_table.size(), 2u);
  EXPECT_EQ(b1.num_logit_rows(), 0);
  EXPECT_EQ(s.get(id)->num_computed, 8);
  EXPECT_EQ(s.blocks().num_used(), 2);

  sim.step();  // [8, 16)
  EXPECT_EQ(sim.last_plan.batch.seqs[0].context_len, 8);
  EXPECT_EQ(sim.last_plan.batch.seqs[0].num_tokens, 8);
  EXPECT_FALSE(sim.last_plan.batch.seqs[0].need_logits);
  EXPECT_EQ(sim.last_plan.batch.tokens.front(), 9);

  sim.step();  // [16, 20) and the first token
  EXPECT_EQ(sim.last_plan.batch.seqs[0].context_len, 16);
  EXPECT_EQ(sim.last_plan.batch.seqs[0].num_tokens, 4);
  EXPECT_TRUE(sim.last_plan.batch.seqs[0].need_logits);
  EXPECT_EQ(sim.last_plan.num_prefill_tokens, 4);
  EXPECT_EQ(sim.outputs[id].size(), 1u);

  sim.step();  // a decode at position 20 needs a sixth page
  EXPECT_EQ(sim.last_plan.batch.seqs[0].context_len, 20);
  EXPECT_EQ(sim.last_plan.batch.seqs[0].num_tokens, 1);
  EXPECT_EQ(sim.last_plan.num_decode_tokens, 1);
  EXPECT_EQ(sim.last_plan.batch.seqs[0].block_table.size(), 6u);

  sim.run_to_completion();
  EXPECT_EQ(sim.outputs[id], run_alone(make_prompt(20), 3));
  EXPECT_EQ(sim.finished[id], RequestStatus::FinishedLength);
  EXPECT_EQ(s.blocks().num_used(), 0);
  EXPECT_EQ(s.slots().num_used(), 0);
}

TEST(Scheduler, DecodesFirstThenPrefillUnderTheBudget) {
  Scheduler s(config(8, 10, 256, 64, 16));
  Sim sim(s);
  std::vector<uint64_t> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(s.add(make_request(2, 50, 100 * i + 1)));
  sim.step();  // all three prompts (6 tokens)
  EXPECT_EQ(sim.last_plan.batch.num_tokens(), 6);
  uint64_t big = s.add(make_request(30, 5, 500));
  sim.step();
  // 3 decodes first, then 7 tokens of the new prompt.
  const auto& plan = sim.last_plan;
  ASSERT_EQ(plan.scheduled.size(), 4u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(plan.scheduled[size_t(i)].request_id, ids[size_t(i)]);
    EXPECT_TRUE(plan.scheduled[size_t(i)].decode);
  }
  EXPECT_EQ(plan.scheduled[3].request_id, big);
  EXPECT_EQ(plan.scheduled[3].num_tokens, 7);
  EXPECT_EQ(plan.num_decode_tokens, 3);
  EXPECT_EQ(plan.num_prefill_tokens, 7);
  EXPECT_EQ(plan.batch.num_tokens(), 10);
  EXPECT_EQ(plan.batch.num_logit_rows(), 3);
  // Every later step is full until the prompt is done: 3 decodes + 7 prefill, then 3 + 7, 3 + 7, 3 + 2.
  for (int want : {7, 7, 7, 2}) {
    sim.step();
    EXPECT_EQ(sim.last_plan.num_decode_tokens, 3);
    EXPECT_EQ(sim.last_plan.num_prefill_tokens, want);
  }
  EXPECT_EQ(sim.outputs[big].size(), 1u);
  sim.run_to_completion();
  for (uint64_t id : ids) {
    const int i = int(id - ids[0]);
    EXPECT_EQ(sim.outputs[id], run_alone(make_prompt(2, 100 * i + 1), 50));
  }
  EXPECT_EQ(sim.outputs[big], run_alone(make_prompt(30, 500), 5));
}

TEST(Scheduler, BudgetSmallerThanRunningDecodesDefersTheRest) {
  Scheduler s(config(4, 2, 64, 64, 4));
  Sim sim(s);
  std::vector<uint64_t> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(s.add(make_request(1, 4, 10 * i + 1)));
  sim.step();
  EXPECT_EQ(sim.last_plan.batch.num_tokens(), 2);
  sim.step();
  EXPECT_EQ(sim.last_plan.batch.num_tokens(), 2);
  sim.run_to_completion();
  for (int i = 0; i < 4; ++i) EXPECT_EQ(sim.outputs[ids[size_t(i)]], run_alone({10 * i + 1}, 4));
}

TEST(Scheduler, MaxNumSeqsAndSlotsLimitAdmission) {
  Scheduler s(config(2, 100, 64, 64, 4));
  Sim sim(s);
  for (int i = 0; i < 5; ++i) s.add(make_request(3, 2, 10 * i + 1));
  sim.step();
  EXPECT_EQ(sim.last_plan.scheduled.size(), 2u);
  EXPECT_EQ(s.num_running(), 2);
  EXPECT_EQ(s.num_waiting(), 3);
  EXPECT_EQ(s.slots().num_free(), 0);
  sim.run_to_completion();
  EXPECT_EQ(sim.finished.size(), 5u);
}

TEST(Scheduler, PageExhaustionBlocksAdmission) {
  // 4 pages of 4 tokens. a's 16-token prompt takes them all: b waits until a is done.
  Scheduler s(config(4, 100, 16, 4, 4));
  Sim sim(s);
  uint64_t a = s.add(make_request(16, 1, 1));
  uint64_t b = s.add(make_request(8, 1, 20));
  sim.step();
  ASSERT_EQ(sim.last_plan.scheduled.size(), 1u);
  EXPECT_EQ(sim.last_plan.scheduled[0].request_id, a);
  EXPECT_EQ(sim.finished.count(a), 1u);
  EXPECT_EQ(s.blocks().num_free(), 4) << "a finished and gave its pages back";
  sim.step();
  ASSERT_EQ(sim.last_plan.scheduled.size(), 1u);
  EXPECT_EQ(sim.last_plan.scheduled[0].request_id, b);
}

TEST(Scheduler, AdmissionKeepsOnePagePerRunningRequestInReserve) {
  // 4 pages of 4 tokens. a (8 tokens) takes 2; with a running, b may use only 2 - 1 = 1 page now,
  // so its prompt is chunked; c must wait.
  Scheduler s(config(4, 100, 16, 4, 4));
  Sim sim(s);
  uint64_t a = s.add(make_request(8, 3, 1));
  uint64_t b = s.add(make_request(8, 3, 20));
  uint64_t c = s.add(make_request(4, 3, 40));
  sim.step();
  ASSERT_EQ(sim.last_plan.scheduled.size(), 2u);
  EXPECT_EQ(sim.last_plan.scheduled[0].request_id, a);
  EXPECT_EQ(sim.last_plan.scheduled[0].num_tokens, 8);
  EXPECT_EQ(sim.last_plan.scheduled[1].request_id, b);
  EXPECT_EQ(sim.last_plan.scheduled[1].num_tokens, 4);
  EXPECT_FALSE(sim.last_plan.scheduled[1].sample);
  EXPECT_EQ(s.num_waiting(), 1);
  sim.run_to_completion();
  EXPECT_EQ(sim.outputs[a], run_alone(make_prompt(8, 1), 3));
  EXPECT_EQ(sim.outputs[b], run_alone(make_prompt(8, 20), 3));
  EXPECT_EQ(sim.outputs[c], run_alone(make_prompt(4, 40), 3));
}

TEST(Scheduler, PreemptsTheYoungestAndResumesWithIdenticalOutput) {
  // 6 pages of 4 tokens = 24 tokens for three requests that each grow to 4 + 12 = 16 tokens.
  Scheduler s(config(3, 64, 24, 6, 4));
  Sim sim(s);
  std::vector<uint64_t> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(s.add(make_request(4, 12, 50 * i + 1)));
  bool saw_preemption = false;
  while (s.has_work()) {
    sim.step();
    for (uint64_t p : sim.last_plan.preempted) {
      saw_preemption = true;
      const Request* r = s.get(p);
      ASSERT_NE(r, nullptr);
      EXPECT_EQ(r->status, RequestStatus::Waiting);
      EXPECT_EQ(r->num_computed, 0);
      EXPECT_TRUE(r->blocks.empty());
      EXPECT_EQ(r->state_slot, -1);
      // The youngest running request is the victim, never the oldest.
      EXPECT_NE(p, ids[0]);
    }
    if (!sim.last_plan.preempted.empty()) {
      // Nothing is admitted in a step that preempted.
      for (const auto& q : sim.last_plan.scheduled)
        for (uint64_t p : sim.last_plan.preempted) EXPECT_NE(q.request_id, p);
    }
  }
  EXPECT_TRUE(saw_preemption);
  EXPECT_GT(s.num_preemptions(), 0);
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(sim.outputs[ids[size_t(i)]], run_alone(make_prompt(4, 50 * i + 1), 12)) << "request " << i;
  EXPECT_EQ(s.blocks().num_used(), 0);
  EXPECT_EQ(s.slots().num_used(), 0);
}

TEST(Scheduler, PreemptedRequestGoesToTheFrontAndRefillsPromptPlusOutput) {
  // Two requests, 4 pages of 2 tokens: both grow past what the pool holds together.
  Scheduler s(config(2, 64, 8, 4, 2));
  Sim sim(s);
  uint64_t a = s.add(make_request(2, 6, 1));
  uint64_t b = s.add(make_request(2, 6, 10));
  uint64_t c = s.add(make_request(1, 1, 30));  // waits behind b once b is preempted
  uint64_t preempted = 0;
  int64_t outputs_at_preemption = 0;
  while (s.has_work() && !preempted) {
    sim.step();
    if (!sim.last_plan.preempted.empty()) {
      preempted = sim.last_plan.preempted[0];
      outputs_at_preemption = int64_t(s.get(preempted)->output.size());
    }
  }
  ASSERT_EQ(preempted, b);
  EXPECT_GT(outputs_at_preemption, 0);
  // b resumes before c: its first slice starts from context 0 and feeds prompt + output.
  bool resumed = false;
  while (s.has_work() && !resumed) {
    sim.step();
    for (size_t i = 0; i < sim.last_plan.scheduled.size(); ++i) {
      EXPECT_NE(sim.last_plan.scheduled[i].request_id, c) << "c overtook the preempted request";
      if (sim.last_plan.scheduled[i].request_id != b) continue;
      resumed = true;
      // Starts from a fresh slot; Sim checks the tokens are prompt + output from position 0.
      const SeqSlice& sl = sim.last_plan.batch.seqs[i];
      EXPECT_EQ(sl.context_len, 0);
      EXPECT_LE(sl.num_tokens, 2 + outputs_at_preemption);
      EXPECT_GE(s.get(b)->output.size(), size_t(outputs_at_preemption)) << "no token was lost";
    }
  }
  ASSERT_TRUE(resumed);
  sim.run_to_completion();
  EXPECT_EQ(sim.outputs[a], run_alone(make_prompt(2, 1), 6));
  EXPECT_EQ(sim.outputs[b], run_alone(make_prompt(2, 10), 6));
  EXPECT_EQ(sim.outputs[c], run_alone(make_prompt(1, 30), 1));
}

TEST(Scheduler, AbortFreesMemoryOfRunningAndWaitingRequests) {
  Scheduler s(config(1, 64, 32, 8, 4));
  Sim sim(s);
  uint64_t a = s.add(make_request(10, 20));
  uint64_t b = s.add(make_request(5, 20));
  sim.step();
  EXPECT_EQ(s.blocks().num_used(), 3);
  EXPECT_EQ(s.slots().num_used(), 1);
  EXPECT_TRUE(s.abort(b));  // waiting
  EXPECT_EQ(s.num_waiting(), 0);
  EXPECT_TRUE(s.abort(a));  // running
  EXPECT_EQ(s.num_running(), 0);
  EXPECT_EQ(s.blocks().num_used(), 0);
  EXPECT_EQ(s.slots().num_used(), 0);
  EXPECT_FALSE(s.abort(a));
  EXPECT_FALSE(s.has_work());
  EXPECT_TRUE(s.schedule().empty());
}

TEST(Scheduler, FinishedBetweenScheduleAndUpdateIsSkipped) {
  Scheduler s(config(2, 64, 32, 8, 4));
  uint64_t a = s.add(make_request(3, 5, 1));
  uint64_t b = s.add(make_request(3, 5, 9));
  StepPlan plan = s.schedule();
  ASSERT_EQ(plan.sampling.size(), 2u);
  EXPECT_TRUE(s.finish(a, RequestStatus::FinishedError));
  StepResult res;
  res.samples.resize(2);
  res.samples[0].token = 7;
  res.samples[1].token = 8;
  auto ups = s.update(plan, res);
  ASSERT_EQ(ups.size(), 1u);
  EXPECT_EQ(ups[0].request_id, b);
  EXPECT_EQ(ups[0].sample.token, 8);
  EXPECT_EQ(s.get(b)->output, std::vector<int32_t>{8});
  StepPlan next = s.schedule();
  ASSERT_EQ(next.sampling.size(), 1u);
  EXPECT_THROW(s.update(next, res), Error) << "a row count mismatch must be caught";
}

TEST(Scheduler, MaxModelLenAndMaxTokensAndStopTokens) {
  Scheduler s(config(4, 64, 10, 16, 4));
  Sim sim(s);
  EXPECT_THROW(s.add(make_request(11, 5)), Error);
  EXPECT_THROW(s.add(make_request(0, 5)), Error);
  EXPECT_THROW(s.add(make_request(3, 0)), Error);
  uint64_t full = s.add(make_request(10, 5, 1));    // prompt == max_model_len: one token
  uint64_t capped = s.add(make_request(6, 50, 20));  // capped at 10 - 6 = 4 tokens
  uint64_t limited = s.add(make_request(2, 3, 40));  // max_tokens
  std::vector<int32_t> ref = run_alone(make_prompt(3, 60), 8);
  Request stopping = make_request(3, 8, 60);
  stopping.stop_token_ids = {ref[2]};
  uint64_t stopped = s.add(stopping);
  sim.run_to_completion();
  EXPECT_EQ(sim.outputs[full].size(), 1u);
  EXPECT_EQ(sim.finished[full], RequestStatus::FinishedLength);
  EXPECT_EQ(sim.outputs[capped].size(), 4u);
  EXPECT_EQ(sim.finished[capped], RequestStatus::FinishedLength);
  EXPECT_EQ(sim.outputs[limited].size(), 3u);
  EXPECT_EQ(sim.finished[limited], RequestStatus::FinishedLength);
  EXPECT_EQ(sim.finished[stopped], RequestStatus::FinishedStopped);
  EXPECT_EQ(sim.outputs[stopped], run_alone(make_prompt(3, 60), 8, {ref[2]}));
  EXPECT_LE(sim.outputs[stopped].size(), 3u);
}

TEST(Scheduler, RejectsAPoolSmallerThanMaxModelLen) {
  EXPECT_THROW(Scheduler(config(2, 64, 100, 4, 16)), Error);
  EXPECT_NO_THROW(Scheduler(config(2, 64, 64, 4, 16)));
}

// Random arrivals, lengths, aborts and a tight pool: every invariant holds on every step, every
// request that is not aborted produces exactly what it produces alone, and all memory comes back.
TEST(Scheduler, RandomWorkloadMatchesRunningAlone) {
  for (uint32_t seed = 1; seed <= 40; ++seed) {
    std::mt19937 rng(seed);
    const int block = 1 + int(rng() % 8);
    const int64_t max_len = 64;
    const int blocks = int((max_len + block - 1) / block) + int(rng() % 12);
    SchedulerConfig cfg = config(1 + int(rng() % 8), 1 + int(rng() % 40), max_len, blocks, block);
    if (seed > 20) {  // a cost budget that binds at these lengths, and long prefills sitting out steps
      cfg.cost = StepCostConfig{.per_pair = 0.05, .per_key = 0.02, .per_step = 0,
                                .max_step_cost = 10.0 + double(rng() % 50), .min_prefill_chunk = 1 + int(rng() % 4),
                                .long_prefill_interval = 1 + int(rng() % 3)};
    }
    if (seed % 3 == 0) cfg.max_logit_rows = std::max(cfg.max_num_seqs, 2) + int(rng() % 6);  // scoring rows bind
    Scheduler s(cfg);
    Sim sim(s);
    struct Spec { std::vector<int32_t> prompt; int max_tokens; bool scored; };
    std::map<uint64_t, Spec> specs;
    std::set<uint64_t> aborted;
    for (int step = 0; step < 3000 && (step < 200 || s.has_work()); ++step) {
      if (step < 200 && rng() % 3 == 0) {
        Request r = make_request(1 + int(rng() % 40), 1 + int(rng() % 30), int(rng() % 1000));
        if (rng() % 2) r.sampling.repetition_penalty = 1.1f;  // the sim checks its history
        if (rng() % 4 == 0) r.prompt_logprobs = int(rng() % 3);  // prompt logprobs (preemptions rescore)
        specs[s.add(r)] = {r.prompt, r.max_tokens, r.prompt_logprobs >= 0};
      }
      if (rng() % 50 == 0 && !specs.empty()) {
        auto it = specs.begin();
        std::advance(it, rng() % specs.size());
        if (s.abort(it->first)) aborted.insert(it->first);
      }
      if (s.has_work()) sim.step();
    }
    ASSERT_FALSE(s.has_work()) << "seed " << seed;
    sim.finish_releases();
    for (const auto& [id, spec] : specs) {
      if (aborted.count(id)) continue;
      const int cap = int(std::min<int64_t>(spec.max_tokens, max_len - int64_t(spec.prompt.size())));
      EXPECT_EQ(sim.outputs[id], run_alone(spec.prompt, std::max(cap, 1))) << "seed " << seed << " id " << id;
      if (!spec.scored) {
        EXPECT_TRUE(sim.scored[id].empty());
        continue;
      }
      ASSERT_EQ(sim.scored[id].size(), spec.prompt.size() - 1) << "seed " << seed << " id " << id;
      for (size_t p = 1; p < spec.prompt.size(); ++p) EXPECT_EQ(sim.scored[id][int64_t(p)], spec.prompt[p]);
    }
    EXPECT_EQ(s.blocks().num_used(), 0);
    EXPECT_EQ(s.slots().num_used(), 0);
  }
}

// --scheduling-policy priority: admissions by (priority, arrival), lower first; fcfs keeps arrival order
// whatever the priorities say.
TEST(SchedulerPriority, AdmitsTheMostUrgentWaitingRequestFirst) {
  for (SchedulingPolicy policy : {SchedulingPolicy::Fcfs, SchedulingPolicy::Priority}) {
    SchedulerConfig c = config(1, 100, 64, 64, 4);
    c.policy = policy;
    Scheduler s(c);
    Sim sim(s);
    std::vector<uint64_t> ids;
    const int64_t prio[] = {5, 0, 5, -3, 0};  // arrival order a..e
    for (int i = 0; i < 5; ++i) {
      Request r = make_request(3, 1, 10 * i + 1);
      r.priority = prio[i];
      ids.push_back(s.add(std::move(r)));
    }
    std::vector<uint64_t> order;
    while (s.has_work()) {
      sim.step();
      for (const auto& q : sim.last_plan.scheduled) order.push_back(q.request_id);
    }
    const std::vector<uint64_t> want = policy == SchedulingPolicy::Fcfs
                                           ? ids
                                           : std::vector<uint64_t>{ids[3], ids[1], ids[4], ids[0], ids[2]};
    EXPECT_EQ(order, want) << (policy == SchedulingPolicy::Fcfs ? "fcfs" : "priority");
    for (int i = 0; i < 5; ++i) EXPECT_EQ(sim.outputs[ids[size_t(i)]], run_alone(make_prompt(3, 10 * i + 1), 1));
  }
}

// Under memory pressure the least urgent running request is preempted, even when it is the oldest; the
// urgent one is never preempted and every output equals the request run alone.
TEST(SchedulerPriority, PreemptsTheLeastUrgentRunningRequest) {
  // 6 pages of 4 tokens = 24 tokens; each request grows to 4 + 12 = 16 tokens.
  SchedulerConfig c = config(3, 64, 24, 6, 4);
  c.policy = SchedulingPolicy::Priority;
  Scheduler s(c);
  Sim sim(s);
  const int64_t prio[] = {9, 1, 4};  // the oldest is the least urgent
  std::vector<uint64_t> ids;
  for (int i = 0; i < 3; ++i) {
    Request r = make_request(4, 12, 50 * i + 1);
    r.priority = prio[i];
    ids.push_back(s.add(std::move(r)));
  }
  std::vector<uint64_t> victims;
  while (s.has_work()) {
    sim.step();
    for (uint64_t p : sim.last_plan.preempted) victims.push_back(p);
  }
  ASSERT_FALSE(victims.empty());
  EXPECT_EQ(victims.front(), ids[0]) << "the least urgent request goes first";
  for (uint64_t v : victims) EXPECT_NE(v, ids[1]) << "the most urgent request is never preempted";
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(sim.outputs[ids[size_t(i)]], run_alone(make_prompt(4, 50 * i + 1), 12)) << "request " << i;
  EXPECT_EQ(s.blocks().num_used(), 0);
  EXPECT_EQ(s.slots().num_used(), 0);
}

// The randomised workload of RandomWorkloadMatchesRunningAlone under the priority policy with random
// priorities and a tight page pool: every output equals its request run alone, memory is returned.
TEST(SchedulerPriority, RandomPrioritiesMatchRunningAlone) {
  std::mt19937 rng(77);
  for (int trial = 0; trial < 20; ++trial) {
    SchedulerConfig c = config(4, 24, 40, 14, 4);
    c.policy = SchedulingPolicy::Priority;
    Scheduler s(c);
    Sim sim(s);
    std::vector<std::pair<uint64_t, std::pair<int, int>>> reqs;  // id, (prompt start, length), max tokens
    std::vector<int> max_toks;
    for (int i = 0; i < 10; ++i) {
      const int len = 1 + int(rng() % 12), mt = 1 + int(rng() % 14), start = 100 * i + 1;
      Request r = make_request(len, mt, start);
      r.priority = int64_t(rng() % 4) - 1;
      reqs.push_back({s.add(std::move(r)), {start, len}});
      max_toks.push_back(mt);
      if (rng() % 3 == 0) sim.step();  // arrivals between steps
    }
    sim.run_to_completion();
    for (size_t i = 0; i < reqs.size(); ++i)
      EXPECT_EQ(sim.outputs[reqs[i].first], run_alone(make_prompt(reqs[i].second.second, reqs[i].second.first), max_toks[i]))
          << "trial " << trial << " request " << i;
    EXPECT_EQ(s.blocks().num_used(), 0);
    EXPECT_EQ(s.slots().num_used(), 0);
  }
}

// A preempted request rejoins the waiting queue at its place by priority: behind a more urgent request that
// arrived after it (fcfs would put it at the front).
TEST(SchedulerPriority, PreemptedRequestRequeuesByPriority) {
  SchedulerConfig c = config(2, 64, 24, 6, 4);  // two at a time; 24 tokens of pages for two 16-token requests
  c.policy = SchedulingPolicy::Priority;
  Scheduler s(c);
  Sim sim(s);
  Request ra = make_request(4, 12, 1), rb = make_request(4, 12, 100), rc = make_request(4, 2, 200);
  ra.priority = 9;
  rb.priority = 1;
  rc.priority = 5;
  const uint64_t a = s.add(std::move(ra)), b = s.add(std::move(rb));
  sim.step();  // a and b run
  ASSERT_EQ(s.num_running(), 2);
  const uint64_t cc = s.add(std::move(rc));  // waits: two at a time
  bool preempted = false;
  uint64_t next = 0;  // the first of a and c scheduled after a's preemption
  while (s.has_work() && next == 0) {
    sim.step();
    if (preempted)
      for (const auto& q : sim.last_plan.scheduled)
        if ((q.request_id == a || q.request_id == cc) && next == 0) next = q.request_id;
    for (uint64_t p : sim.last_plan.preempted) {
      EXPECT_EQ(p, a);
      preempted = true;
    }
  }
  ASSERT_TRUE(preempted);
  EXPECT_EQ(next, cc) << "c (priority 5) goes before the preempted a (priority 9)";
  sim.run_to_completion();
  EXPECT_EQ(sim.outputs[a], run_alone(make_prompt(4, 1), 12));
  EXPECT_EQ(sim.outputs[b], run_alone(make_prompt(4, 100), 12));
  EXPECT_EQ(sim.outputs[cc], run_alone(make_prompt(4, 200), 2));
}

// Prompt logprobs (Request::prompt_logprobs): every prompt token after the first is scored exactly once, in
// order, by rows of the chunks that compute it; the prompt's last position samples the first output token;
// the chunks stay within the logits rows of a step; the outputs are those of the request run without scoring.
TEST(Scheduler, PromptScoringRowsCoverThePromptWithinTheRowLimit) {
  for (const int max_rows : {0, 5, 16}) {
    SchedulerConfig c = config(4, 12, 128, 64, 4);
    c.max_logit_rows = max_rows;
    Scheduler s(c);
    Request a = make_request(30, 4, 1);
    a.prompt_logprobs = 2;
    const uint64_t ida = s.add(a);
    const uint64_t idb = s.add(make_request(9, 6, 50));  // beside it, not scoring
    Request one = make_request(1, 2, 90);                // a one-token prompt scores nothing
    one.prompt_logprobs = 0;
    const uint64_t idc = s.add(one);
    Sim sim(s);
    sim.run_to_completion();
    ASSERT_EQ(sim.scored[ida].size(), 29u) << "max_logit_rows " << max_rows;
    for (int64_t p = 1; p < 30; ++p) EXPECT_EQ(sim.scored[ida][p], int32_t(1 + p)) << "position " << p;
    EXPECT_TRUE(sim.scored[idb].empty());
    EXPECT_TRUE(sim.scored[idc].empty());
    EXPECT_EQ(sim.outputs[ida], run_alone(make_prompt(30, 1), 4));
    EXPECT_EQ(sim.outputs[idb], run_alone(make_prompt(9, 50), 6));
    EXPECT_EQ(sim.outputs[idc], run_alone(make_prompt(1, 90), 2));
  }
}

// A scoring request never takes a prefix-cache hit (its cached tokens would have no logits rows). (Preemption:
// RandomWorkloadMatchesRunningAlone, where a request preempted before its prompt is scored scores it again.)
TEST(Scheduler, PromptScoringBesidePrefixCaching) {
  SchedulerConfig c = config(2, 64, 64, 24, 4);
  c.prefix.enabled = true;
  c.prefix.num_snapshots = 8;
  Scheduler s(c);
  Sim sim(s);
  // a first turn leaves its state in the cache; the next turn's prompt continues it
  const uint64_t first = s.add(make_request(24, 2, 1));
  sim.run_to_completion();
  ASSERT_EQ(sim.outputs[first].size(), 2u);
  std::vector<int32_t> turn2 = make_prompt(24, 1);
  turn2.insert(turn2.end(), sim.outputs[first].begin(), sim.outputs[first].end());
  for (int32_t t : {500, 501, 502, 503}) turn2.push_back(t);
  Request r;
  r.prompt = turn2;
  r.max_tokens = 3;
  r.prompt_logprobs = 1;
  const uint64_t id = s.add(r);
  sim.step();
  EXPECT_EQ(sim.last_plan.batch.seqs.at(0).state_init, StateInit::Zero) << "no prefix-cache hit when scoring";
  EXPECT_EQ(sim.last_plan.batch.seqs.at(0).context_len, 0);
  sim.run_to_completion();
  ASSERT_EQ(sim.scored[id].size(), turn2.size() - 1);
  for (size_t p = 1; p < turn2.size(); ++p) EXPECT_EQ(sim.scored[id][int64_t(p)], turn2[p]);
  EXPECT_EQ(sim.outputs[id], run_alone(turn2, 3));
  Request control;  // the same turn unscored does hit the cache
  control.prompt = turn2;
  control.max_tokens = 2;
  const uint64_t cid = s.add(control);
  sim.step();
  EXPECT_GT(sim.last_plan.batch.seqs.at(0).context_len, 0) << "the control should hit: the test would be vacuous";
  sim.run_to_completion();
  EXPECT_EQ(sim.outputs[cid], run_alone(turn2, 2));
}
