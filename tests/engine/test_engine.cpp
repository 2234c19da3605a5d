#include <gtest/gtest.h>

#include <map>
#include <random>
#include <thread>

#include "engine/engine.h"
#include "engine_util.h"
#include "fake_backend.h"

using namespace ds;
using namespace ds::test;

namespace {

std::unique_ptr<Engine> make_engine(FakeOptions fo, int max_num_seqs, int budget, int64_t max_len = 0,
                                    int max_waiting = 1024) {
  EngineOptions eo;
  eo.max_num_seqs = max_num_seqs;
  eo.max_num_batched_tokens = budget;
  eo.max_model_len = max_len;
  eo.max_waiting = max_waiting;
  return std::make_unique<Engine>(std::make_unique<FakeBackend>(fo), nullptr, eo);
}

GenerationRequest token_request(std::vector<int32_t> prompt, int max_tokens) {
  GenerationRequest r;
  r.prompt_tokens = std::move(prompt);
  r.max_tokens = max_tokens;
  r.detokenize = false;
  r.sampling.temperature = 0.0f;
  return r;
}

// 64 requests of different lengths and sampling settings.
std::vector<GenerationRequest> workload(int n, int max_prompt, int max_out, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<GenerationRequest> reqs;
  for (int i = 0; i < n; ++i) {
    std::vector<int32_t> prompt(size_t(1 + rng() % uint32_t(max_prompt)));
    for (auto& t : prompt) t = int32_t(rng() % 2048);
    GenerationRequest r = token_request(prompt, 1 + int(rng() % uint32_t(max_out)));
    r.request_id = "r";  // (not "r" + to_string: GCC 12 raises a false -Wrestrict there)
    r.request_id += std::to_string(i);
    switch (i % 4) {
      case 0: break;  // greedy
      case 1:
        r.sampling.temperature = 0.8f;
        r.sampling.top_p = 0.9f;
        r.sampling.seed = 1000 + uint64_t(i);
        break;
      case 2:
        r.sampling.temperature = 1.0f;
        r.sampling.top_k = 20;
        r.sampling.min_p = 0.05f;
        r.sampling.seed = uint64_t(i);
        r.sampling.num_logprobs = 2;
        break;
      case 3:
        r.sampling.temperature = 0.7f;
        r.sampling.repetition_penalty = 1.3f;
        r.sampling.presence_penalty = 0.5f;
        r.sampling.frequency_penalty = 0.25f;
        r.sampling.seed = 77;
        break;
    }
    reqs.push_back(r);
  }
  return reqs;
}

std::vector<Collected> run_alone(const FakeOptions& fo, const std::vector<GenerationRequest>& reqs) {
  auto e = make_engine(fo, 1, 4096);
  std::vector<Collected> out;
  for (const auto& r : reqs) out.push_back(run_one(*e, r));
  return out;
}

std::vector<Collected> run_concurrently(Engine& e, const std::vector<GenerationRequest>& reqs) {
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (const auto& r : reqs) streams.push_back(submit_ok(e, r));
  std::vector<Collected> out;
  for (auto& s : streams) out.push_back(collect(*s));
  return out;
}

void expect_same(const std::vector<Collected>& a, const std::vector<Collected>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].tokens, b[i].tokens) << "request " << i;
    EXPECT_EQ(a[i].finish, b[i].finish) << "request " << i;
    ASSERT_EQ(a[i].logprobs.size(), b[i].logprobs.size()) << "request " << i;
    for (size_t k = 0; k < a[i].logprobs.size(); ++k) {
      EXPECT_EQ(a[i].logprobs[k].logprob, b[i].logprobs[k].logprob);
      EXPECT_EQ(a[i].logprobs[k].top_logprobs, b[i].logprobs[k].top_logprobs);
    }
  }
}

}  // namespace

TEST(Engine, SixtyFourConcurrentRequestsGetWhatTheyGetAlone) {
  FakeOptions fo;
  auto reqs = workload(64, 300, 48, 1);
  auto alone = run_alone(fo, reqs);
  // A 128-token budget: long prompts are chunked and share steps with decodes.
  auto e = make_engine(fo, 64, 128);
  auto together = run_concurrently(*e, reqs);
  expect_same(alone, together);
  int64_t prompt = 0, gen = 0;
  for (size_t i = 0; i < reqs.size(); ++i) {
    EXPECT_EQ(together[i].finish, FinishReason::Length);
    EXPECT_EQ(int(together[i].tokens.size()), reqs[i].max_tokens);
    EXPECT_EQ(together[i].completion_tokens, reqs[i].max_tokens);
    EXPECT_EQ(together[i].prompt_tokens, int(reqs[i].prompt_tokens.size()));
    EXPECT_EQ(together[i].outputs, reqs[i].max_tokens) << "one output per token";
    if (reqs[i].sampling.num_logprobs >= 0) {
      EXPECT_EQ(together[i].logprobs.size(), together[i].tokens.size());
    } else {
      EXPECT_TRUE(together[i].logprobs.empty());
    }
    prompt += int64_t(reqs[i].prompt_tokens.size());
    gen += reqs[i].max_tokens;
  }
  EngineStats st = e->stats();
  EXPECT_EQ(st.prompt_tokens_total, prompt);
  EXPECT_EQ(st.generation_tokens_total, gen);
  EXPECT_EQ(st.running, 0);
  EXPECT_EQ(st.waiting, 0);
  EXPECT_EQ(st.kv_usage, 0.0);
  EXPECT_EQ(st.state_usage, 0.0);
  EXPECT_EQ(st.num_preemptions, 0);
  EXPECT_GT(st.steps, 48);
  // They really ran together: far fewer steps than tokens produced.
  EXPECT_LT(st.steps, gen / 4) << "steps " << st.steps << " for " << gen << " tokens";
  // Where the step thread's time went: every phase of the steps timed.
  EXPECT_GT(st.execute_seconds, 0.0);
  EXPECT_GT(st.schedule_seconds, 0.0);
  EXPECT_GT(st.update_seconds, 0.0);
}

TEST(Engine, PreemptionUnderATinyPagePoolGivesIdenticalOutputs) {
  auto reqs = workload(64, 300, 48, 2);
  FakeOptions roomy;
  auto alone = run_alone(roomy, reqs);
  FakeOptions tight;
  tight.num_blocks = 25;  // 400 tokens for 64 requests of up to 348
  tight.block_size = 16;
  auto e = make_engine(tight, 64, 256, 400);
  EXPECT_EQ(e->max_model_len(), 400);
  auto together = run_concurrently(*e, reqs);
  expect_same(alone, together);
  EngineStats st = e->stats();
  EXPECT_GT(st.num_preemptions, 0);
  std::printf("preemptions: %lld in %lld steps\n", (long long)st.num_preemptions, (long long)st.steps);
  EXPECT_EQ(st.kv_usage, 0.0);
  EXPECT_EQ(st.state_usage, 0.0);
}

// --max-num-batched-tokens beyond the backend's published token limit is lowered to it: the scheduler
// chunks within the limit (the fake throws on a larger batch, which would end requests with an error).
TEST(Engine, StepsStayWithinTheBackendsTokenLimit) {
  auto reqs = workload(16, 300, 16, 5);
  auto alone = run_alone(FakeOptions{}, reqs);
  FakeOptions limited;
  limited.max_tokens_per_step = 48;
  auto e = make_engine(limited, 16, 2048);
  auto together = run_concurrently(*e, reqs);
  expect_same(alone, together);
  for (const auto& c : together) EXPECT_EQ(c.finish, FinishReason::Length) << c.error;
}

// Penalty histories go to the backend once per admission and are released when requests end: once
// everything has finished and one more step ran, the backend holds none.
TEST(Engine, PenaltyHistoriesAreReleased) {
  auto reqs = workload(24, 200, 24, 6);  // a quarter have penalties
  FakeOptions tight;
  tight.num_blocks = 20;  // preemptions: histories are released and sent again
  tight.block_size = 16;
  auto backend = std::make_unique<FakeBackend>(tight);
  FakeBackend* fake = backend.get();
  EngineOptions eo;
  eo.max_num_seqs = 24;
  eo.max_num_batched_tokens = 128;
  eo.max_model_len = 320;
  Engine e(std::move(backend), nullptr, eo);
  auto alone = run_alone(FakeOptions{}, reqs);
  expect_same(alone, run_concurrently(e, reqs));
  run_one(e, token_request({1, 2, 3}, 2));  // the step that carries the last releases
  e.drain();
  EXPECT_EQ(fake->num_penalty_histories(), 0u);
}

TEST(Engine, AbortsAmidPreemptionLeaveTheOthersIntact) {
  auto reqs = workload(40, 200, 40, 3);
  FakeOptions roomy;
  auto alone = run_alone(roomy, reqs);
  FakeOptions tight;
  tight.num_blocks = 16;
  tight.block_size = 16;
  tight.step_delay_ms = 1;
  auto e = make_engine(tight, 40, 128, 256);
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (const auto& r : reqs) streams.push_back(submit_ok(*e, r));
  for (size_t i = 0; i < reqs.size(); i += 5) e->abort(reqs[i].request_id);
  for (size_t i = 0; i < reqs.size(); ++i) {
    Collected c = collect(*streams[i]);
    if (i % 5 == 0) {
      // Aborted before or after some tokens: what it did produce is a prefix of its tokens alone.
      EXPECT_TRUE(c.finish == FinishReason::Abort || c.finish == FinishReason::Length) << i;
      ASSERT_LE(c.tokens.size(), alone[i].tokens.size());
      EXPECT_TRUE(std::equal(c.tokens.begin(), c.tokens.end(), alone[i].tokens.begin())) << i;
    } else {
      EXPECT_EQ(c.tokens, alone[i].tokens) << i;
    }
  }
  EngineStats st = e->stats();
  EXPECT_EQ(st.kv_usage, 0.0);
  EXPECT_EQ(st.state_usage, 0.0);
}

TEST(Engine, MaxModelLenIsCappedByTheCache) {
  FakeOptions fo;
  fo.num_blocks = 10;
  fo.block_size = 8;
  auto e = make_engine(fo, 4, 64, 0);
  EXPECT_EQ(e->max_model_len(), 80);
  // A 78-token prompt can produce 2 tokens before the context is full.
  Collected c = run_one(*e, token_request(std::vector<int32_t>(78, 5), 100));
  EXPECT_EQ(c.tokens.size(), 2u);
  EXPECT_EQ(c.finish, FinishReason::Length);
  std::shared_ptr<RequestStream> s;
  std::string why;
  EXPECT_EQ(e->submit(token_request(std::vector<int32_t>(81, 5), 1), &s, &why), SubmitStatus::TooLong);
  EXPECT_NE(why.find("81"), std::string::npos) << why;
  EXPECT_EQ(e->submit(token_request(std::vector<int32_t>(80, 5), 1), &s, &why), SubmitStatus::Ok);
  EXPECT_EQ(collect(*s).tokens.size(), 1u);
}

// A backend whose steps cannot attend over the whole cache (the GPU's MLA prefill workspace) caps
// max_model_len too: a longer prompt is refused at admission with the numbers, never failed mid-step.
TEST(Engine, MaxModelLenIsCappedByTheBackendsContext) {
  FakeOptions fo;
  fo.max_context = 100;
  auto e = make_engine(fo, 4, 64, 1000);
  EXPECT_EQ(e->max_model_len(), 100);
  std::shared_ptr<RequestStream> s;
  std::string why;
  EXPECT_EQ(e->submit(token_request(std::vector<int32_t>(101, 5), 1), &s, &why), SubmitStatus::TooLong);
  EXPECT_NE(why.find("101"), std::string::npos) << why;
  EXPECT_NE(why.find("lowered to 100: one step of this backend attends over at most 100 tokens"), std::string::npos)
      << why;
  EXPECT_EQ(e->submit(token_request(std::vector<int32_t>(99, 5), 10), &s, &why), SubmitStatus::Ok);
  EXPECT_EQ(collect(*s).tokens.size(), 1u);  // the context is full after one token
}

TEST(Engine, StopTokenIdsEosAndIgnoreEos) {
  FakeOptions fo;
  auto e = make_engine(fo, 4, 64);
  std::vector<int32_t> prompt{1, 2, 3};
  Collected free_run = run_one(*e, token_request(prompt, 12));
  ASSERT_EQ(free_run.tokens.size(), 12u);
  const int32_t stop_tok = free_run.tokens[4];
  size_t first = 0;
  while (free_run.tokens[first] != stop_tok) ++first;

  GenerationRequest r = token_request(prompt, 12);
  r.stop_token_ids = {stop_tok};
  Collected c = run_one(*e, r);
  EXPECT_EQ(c.finish, FinishReason::Stop);
  EXPECT_EQ(c.stop_reason, std::to_string(stop_tok));
  EXPECT_EQ(c.tokens, std::vector<int32_t>(free_run.tokens.begin(), free_run.tokens.begin() + long(first) + 1))
      << "the stop token is the last token";

  // The same token as the model's EOS: stop with no stop_reason; ignore_eos runs to max_tokens.
  FakeOptions with_eos;
  with_eos.eos_token_ids = {stop_tok};
  auto e2 = make_engine(with_eos, 4, 64);
  Collected eos = run_one(*e2, token_request(prompt, 12));
  EXPECT_EQ(eos.finish, FinishReason::Stop);
  EXPECT_EQ(eos.stop_reason, "");
  EXPECT_EQ(eos.tokens.size(), first + 1);
  GenerationRequest ig = token_request(prompt, 12);
  ig.ignore_eos = true;
  Collected ignored = run_one(*e2, ig);
  EXPECT_EQ(ignored.finish, FinishReason::Length);
  EXPECT_EQ(ignored.tokens, free_run.tokens);
}

TEST(Engine, AbortEndsTheStreamAndFreesMemory) {
  FakeOptions fo;
  fo.step_delay_ms = 2;
  auto e = make_engine(fo, 4, 64);
  auto s = submit_ok(*e, token_request({1, 2, 3}, 100000));
  auto w = submit_ok(*e, token_request({4}, 3));  // unaffected
  auto first = s->next(std::chrono::seconds(30));
  ASSERT_TRUE(first.has_value());
  EXPECT_FALSE(first->finished());
  e->abort(s->id);
  e->abort("no-such-request");  // ignored
  Collected rest = collect(*s);
  EXPECT_EQ(rest.finish, FinishReason::Abort);
  EXPECT_LT(rest.tokens.size(), 1000u);
  Collected other = collect(*w);
  EXPECT_EQ(other.finish, FinishReason::Length);
  EXPECT_EQ(other.tokens.size(), 3u);
  // The abort is applied at a step boundary; the stats are published after the next step or idle.
  for (int i = 0; i < 100 && e->stats().kv_usage != 0.0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(e->stats().kv_usage, 0.0);
  EXPECT_EQ(e->stats().state_usage, 0.0);
  EXPECT_EQ(e->stats().running, 0);
}

TEST(Engine, AbortWhileWaitingInTheQueue) {
  FakeOptions fo;
  fo.step_delay_ms = 5;
  auto e = make_engine(fo, 1, 64);  // one at a time: the second waits
  auto a = submit_ok(*e, token_request({1}, 50));
  auto b = submit_ok(*e, token_request({2}, 50));
  e->abort(b->id);
  Collected cb = collect(*b);
  EXPECT_EQ(cb.finish, FinishReason::Abort);
  EXPECT_TRUE(cb.tokens.empty());
  EXPECT_EQ(collect(*a).finish, FinishReason::Length);
}

TEST(Engine, OverloadedWhenTheQueueIsFull) {
  FakeOptions fo;
  fo.step_delay_ms = 20;
  auto e = make_engine(fo, 1, 64, 0, /*max_waiting=*/3);
  std::vector<std::shared_ptr<RequestStream>> accepted;
  int overloaded = 0;
  for (int i = 0; i < 10; ++i) {
    std::shared_ptr<RequestStream> s;
    std::string why;
    SubmitStatus st = e->submit(token_request({int32_t(i + 1)}, 20), &s, &why);
    if (st == SubmitStatus::Ok) accepted.push_back(s);
    if (st == SubmitStatus::Overloaded) {
      ++overloaded;
      EXPECT_FALSE(why.empty());
    }
  }
  // One running at most, three waiting: at least 6 of 10 are turned away.
  EXPECT_GE(overloaded, 6);
  EXPECT_LE(accepted.size(), 4u);
  for (auto& s : accepted) EXPECT_EQ(collect(*s).finish, FinishReason::Length);
}

TEST(Engine, BackendErrorEndsOnlyTheRequestsOfThatStep) {
  FakeOptions fo;
  fo.poison_token = 666;
  auto e = make_engine(fo, 8, 64);
  Collected bad = run_one(*e, token_request({1, 666, 2}, 5));
  EXPECT_EQ(bad.finish, FinishReason::Error);
  EXPECT_NE(bad.error.find("poisoned"), std::string::npos) << bad.error;
  // The engine keeps serving, and memory came back.
  Collected good = run_one(*e, token_request({1, 2}, 5));
  EXPECT_EQ(good.finish, FinishReason::Length);
  EXPECT_EQ(good.tokens.size(), 5u);
  EXPECT_EQ(e->stats().kv_usage, 0.0);
}

// A backend that can run no more steps (Backend::failure(): a parallel group whose rank failed): the failing
// step's requests end with its error, and every later request is refused at once (Unavailable, the server's
// 503) with the reason, instead of being scheduled into steps that can only fail.
TEST(Engine, AFailedBackendRefusesNewRequestsWithTheReason) {
  FakeOptions fo;
  fo.poison_token = 666;
  fo.poison_fails_backend = true;
  auto e = make_engine(fo, 8, 64);
  EXPECT_EQ(e->backend_failure(), "");
  Collected bad = run_one(*e, token_request({1, 666, 2}, 5));
  EXPECT_EQ(bad.finish, FinishReason::Error);
  EXPECT_EQ(e->backend_failure(), "rank 1: poisoned token 666");
  std::shared_ptr<RequestStream> s;
  std::string why;
  EXPECT_EQ(e->submit(token_request({1, 2}, 5), &s, &why), SubmitStatus::Unavailable);
  EXPECT_EQ(why, "the model can run no more steps: rank 1: poisoned token 666");
}

// --scheduling-policy: under fcfs (the default) a request with a non-zero priority is refused with the
// reason (vLLM's rule); under priority it runs, and priority 0 runs under both.
TEST(Engine, PriorityNeedsThePriorityPolicy) {
  for (SchedulingPolicy policy : {SchedulingPolicy::Fcfs, SchedulingPolicy::Priority}) {
    EngineOptions eo;
    eo.max_num_seqs = 2;
    eo.max_num_batched_tokens = 64;
    eo.scheduling_policy = policy;
    Engine e(std::make_unique<FakeBackend>(FakeOptions{}), nullptr, eo);
    std::shared_ptr<RequestStream> s;
    std::string why;
    GenerationRequest urgent = token_request({1, 2}, 3);
    urgent.priority = -5;
    const SubmitStatus st = e.submit(urgent, &s, &why);
    if (policy == SchedulingPolicy::Fcfs) {
      EXPECT_EQ(st, SubmitStatus::Invalid);
      EXPECT_NE(why.find("--scheduling-policy priority"), std::string::npos) << why;
    } else {
      ASSERT_EQ(st, SubmitStatus::Ok) << why;
      EXPECT_EQ(collect(*s).tokens.size(), 3u);
    }
    EXPECT_EQ(run_one(e, token_request({3}, 2)).tokens.size(), 2u);  // priority 0: both policies
  }
}

TEST(Engine, SubmitValidation) {
  FakeOptions fo;
  auto e = make_engine(fo, 2, 64);
  std::shared_ptr<RequestStream> s;
  std::string why;
  EXPECT_EQ(e->submit(token_request({}, 5), &s, &why), SubmitStatus::Invalid);
  EXPECT_EQ(e->submit(token_request({2048}, 5), &s, &why), SubmitStatus::Invalid);
  EXPECT_EQ(e->submit(token_request({-1}, 5), &s, &why), SubmitStatus::Invalid);
  EXPECT_EQ(e->submit(token_request({1}, 0), &s, &why), SubmitStatus::Invalid);
  GenerationRequest t = token_request({1}, 5);
  t.sampling.top_p = 0.0f;
  EXPECT_EQ(e->submit(t, &s, &why), SubmitStatus::Invalid);
  GenerationRequest text = token_request({1}, 5);
  text.detokenize = true;  // no tokenizer
  EXPECT_EQ(e->submit(text, &s, &why), SubmitStatus::Invalid);
  EXPECT_NE(why.find("tokenizer"), std::string::npos);
  GenerationRequest named = token_request({1}, 500);
  named.request_id = "same";
  EXPECT_EQ(e->submit(named, &s, &why), SubmitStatus::Ok);
  EXPECT_EQ(s->id, "same");
  std::shared_ptr<RequestStream> s2;
  EXPECT_EQ(e->submit(named, &s2, &why), SubmitStatus::Invalid) << "duplicate id while live";
  collect(*s);
  EXPECT_EQ(e->submit(named, &s2, &why), SubmitStatus::Ok) << "an id can be reused once finished";
  collect(*s2);
  // Auto ids are distinct.
  std::shared_ptr<RequestStream> a, b;
  ASSERT_EQ(e->submit(token_request({1}, 1), &a, &why), SubmitStatus::Ok);
  ASSERT_EQ(e->submit(token_request({1}, 1), &b, &why), SubmitStatus::Ok);
  EXPECT_NE(a->id, b->id);
  EXPECT_EQ(collect(*a).tokens, collect(*b).tokens);
}

TEST(Engine, DrainFinishesEverythingThenRefusesNewWork) {
  FakeOptions fo;
  fo.step_delay_ms = 1;
  auto e = make_engine(fo, 2, 64);
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (int i = 0; i < 6; ++i) streams.push_back(submit_ok(*e, token_request({int32_t(i + 1)}, 10)));
  e->drain();
  for (auto& s : streams) {
    Collected c = collect(*s, 1);
    EXPECT_EQ(c.finish, FinishReason::Length);
    EXPECT_EQ(c.tokens.size(), 10u);
  }
  std::shared_ptr<RequestStream> s;
  std::string why;
  EXPECT_EQ(e->submit(token_request({1}, 1), &s, &why), SubmitStatus::ShuttingDown);
}

TEST(Engine, DestructionAbortsUnfinishedRequests) {
  FakeOptions fo;
  fo.step_delay_ms = 2;
  std::shared_ptr<RequestStream> running, queued;
  {
    auto e = make_engine(fo, 1, 64);
    running = submit_ok(*e, token_request({1}, 100000));
    queued = submit_ok(*e, token_request({2}, 100000));
    ASSERT_TRUE(running->next(std::chrono::seconds(30)).has_value());
  }
  EXPECT_EQ(collect(*running, 5).finish, FinishReason::Abort);
  EXPECT_EQ(collect(*queued, 5).finish, FinishReason::Abort);
}

TEST(Engine, GreedyLogprobsAreTheTopOne) {
  FakeOptions fo;
  auto e = make_engine(fo, 2, 64);
  GenerationRequest r = token_request({9, 8, 7}, 6);
  r.sampling.num_logprobs = 3;
  Collected c = run_one(*e, r);
  ASSERT_EQ(c.logprobs.size(), 6u);
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(c.logprobs[i].token, c.tokens[i]);
    ASSERT_EQ(c.logprobs[i].top_logprobs.size(), 3u);
    EXPECT_EQ(c.logprobs[i].top_logprobs[0].first, c.tokens[i]);
    EXPECT_EQ(c.logprobs[i].top_logprobs[0].second, c.logprobs[i].logprob);
    EXPECT_LT(c.logprobs[i].logprob, 0.0f);
    EXPECT_GE(c.logprobs[i].top_logprobs[0].second, c.logprobs[i].top_logprobs[1].second);
  }
}

TEST(Engine, FinishReasonNames) {
  EXPECT_STREQ(finish_reason_name(FinishReason::Stop), "stop");
  EXPECT_STREQ(finish_reason_name(FinishReason::Length), "length");
  EXPECT_STREQ(finish_reason_name(FinishReason::Abort), "abort");
  EXPECT_STREQ(finish_reason_name(FinishReason::Error), "error");
}
