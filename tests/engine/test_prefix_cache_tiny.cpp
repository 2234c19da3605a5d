// Prefix caching through the whole engine on the real tiny Kimi-Linear checkpoint (CPU backend, fp32):
// with the cache on, every token and logprob equals the cache-off run bit for bit, and the cache is
// actually used (cached_tokens, the engine's prefix-cache counters).
//
// The backends here take the per-token numerical paths (KDA recurrence, absorbed MLA for every
// token: ForwardOptions below), whose result for a token does not depend on how the prompt was cut
// into chunks; the default chunked KDA form rounds differently at different chunk boundaries (within
// 1e-5, tests/model/test_chunked.cpp), and a hit moves a chunk boundary exactly as --max-num-batched-
// tokens does.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <random>
#include <thread>

#include "engine/engine.h"
#include "engine_util.h"
#include "model/cpu_backend.h"

using namespace ds;
using namespace ds::test;

namespace {

const std::string kFixtures = DS_FIXTURES_DIR;

struct Rig {
  int seqs = 8;
  int blocks = 0;          // 0: enough
  int snapshots = 64;
  int budget = 64;
  int64_t interval = 32;
  int64_t max_len = 512;
};

std::unique_ptr<Backend> backend(const Rig& s) {
  BackendOptions b;
  b.device = "cpu";
  b.model_dir = kFixtures + "/tiny/model";
  b.max_num_seqs = s.seqs;
  b.block_size = 16;
  b.num_blocks = s.blocks;
  b.max_model_len = s.max_len;
  b.num_snapshots = s.snapshots;
  auto cpu = std::make_unique<CpuBackend>(b);
  ForwardOptions fo;
  fo.kda_chunked_prefill = false;
  fo.mla_absorbed_prefill = true;
  cpu->set_forward_options(fo);
  return cpu;
}

EngineOptions engine_options(const Rig& s, bool cache) {
  EngineOptions eo;
  eo.max_num_seqs = s.seqs;
  eo.max_num_batched_tokens = s.budget;
  eo.max_model_len = s.max_len;
  eo.enable_prefix_caching = cache;
  eo.prefix_snapshot_interval = s.interval;
  return eo;
}

std::unique_ptr<Engine> engine(const Rig& s, bool cache) {
  return std::make_unique<Engine>(backend(s), nullptr, engine_options(s, cache));
}

std::vector<int32_t> tokens(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = int32_t(rng() % 2000);
  return t;
}

std::vector<int32_t> cat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

GenerationRequest request(const std::vector<int32_t>& prompt, int max_tokens, uint64_t seed) {
  GenerationRequest r;
  r.prompt_tokens = prompt;
  r.max_tokens = max_tokens;
  r.sampling.temperature = 0.8f;
  r.sampling.seed = seed;
  r.sampling.num_logprobs = 3;
  r.ignore_eos = true;
  r.detokenize = false;
  return r;
}

// Tokens and logprobs (with the top 3) must be equal, not close.
void expect_identical(const Collected& on, const Collected& off, const std::string& what) {
  EXPECT_EQ(on.error, "") << what;
  EXPECT_EQ(on.finish, off.finish) << what;
  ASSERT_EQ(on.tokens, off.tokens) << what;
  ASSERT_EQ(on.logprobs.size(), off.logprobs.size()) << what;
  for (size_t i = 0; i < on.logprobs.size(); ++i) {
    EXPECT_EQ(on.logprobs[i].logprob, off.logprobs[i].logprob) << what << " token " << i;
    EXPECT_EQ(on.logprobs[i].top_logprobs, off.logprobs[i].top_logprobs) << what << " token " << i;
  }
}

// Runs no step until the test opens it: requests submitted before that are all waiting at the first
// step, however the threads are scheduled (a loaded machine could otherwise run the engine's first
// steps between two submits).
class GatedBackend : public Backend {
 public:
  GatedBackend(std::unique_ptr<Backend> inner, std::shared_ptr<std::atomic<bool>> open)
      : inner_(std::move(inner)), open_(std::move(open)) {}
  const ModelConfig& config() const override { return inner_->config(); }
  BackendLimits limits() const override { return inner_->limits(); }
  std::string device_name() const override { return inner_->device_name(); }
  StepResult execute(const StepPlan& plan) override {
    while (!open_->load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return inner_->execute(plan);
  }

 private:
  std::unique_ptr<Backend> inner_;
  std::shared_ptr<std::atomic<bool>> open_;
};

// Submits all requests at once to a cache-on and a cache-off engine and compares them. With `gate`, the
// engines take their first step only once every request is queued.
std::vector<Collected> compare_batch(const Rig& s, const std::vector<GenerationRequest>& reqs, EngineStats* st,
                                     bool gate = false) {
  std::vector<Collected> out[2];
  for (int cache = 0; cache < 2; ++cache) {
    auto open = std::make_shared<std::atomic<bool>>(!gate);
    auto e = std::make_unique<Engine>(std::make_unique<GatedBackend>(backend(s), open), nullptr,
                                      engine_options(s, cache == 1));
    std::vector<std::shared_ptr<RequestStream>> streams;
    for (const auto& r : reqs) streams.push_back(submit_ok(*e, r));
    open->store(true);
    for (auto& st : streams) out[cache].push_back(collect(*st, 300));
    if (cache == 1 && st) *st = e->stats();
  }
  for (size_t i = 0; i < reqs.size(); ++i) expect_identical(out[1][i], out[0][i], "request " + std::to_string(i));
  return out[1];
}

}  // namespace

TEST(PrefixCacheTiny, SixTurnConversationIsBitIdenticalAndHitsEveryTurn) {
  Rig s;
  auto on = engine(s, true), off = engine(s, false);
  std::vector<int32_t> convo;
  for (int turn = 0; turn < 6; ++turn) {
    convo = cat(convo, tokens(9 + 5 * turn, 100 + turn));  // the next user message
    const Collected a = run_one(*on, request(convo, 12, turn));
    const Collected b = run_one(*off, request(convo, 12, turn));
    expect_identical(a, b, "turn " + std::to_string(turn));
    EXPECT_EQ(b.cached_tokens, 0);
    if (turn > 0) {
      // everything before this turn's message: the last answer's final token was never fed
      EXPECT_EQ(a.cached_tokens, int(convo.size()) - (9 + 5 * turn) - 1) << "turn " << turn;
    }
    convo = cat(convo, a.tokens);
  }
  const EngineStats st = on->stats();
  EXPECT_GT(st.prefix_cache_hits, 0);
  EXPECT_GT(st.snapshots_saved, 10);
  EXPECT_EQ(st.snapshots_nonfinite, 0);
  EXPECT_EQ(off->stats().prefix_cache_hits, 0);
  // Idle (once the last answer's state is saved), the pages only the prefix cache holds count as free: the
  // usage gauge reads 0, as an idle vLLM server's does.
  double usage = 1.0;
  for (int i = 0; i < 500 && usage != 0.0; ++i) {
    usage = on->stats().kv_usage;
    if (usage != 0.0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(usage, 0.0);
}

TEST(PrefixCacheTiny, SixtyFourConcurrentRequestsWithOneSystemPrompt) {
  Rig s;
  s.seqs = 16;
  s.budget = 32;  // the first request is still prefilling the system prompt when the others arrive
  const auto system = tokens(75, 7);
  std::vector<GenerationRequest> reqs;
  for (int i = 0; i < 64; ++i) reqs.push_back(request(cat(system, tokens(3 + i % 9, 1000 + i)), 4, i));
  EngineStats st;
  const auto out = compare_batch(s, reqs, &st);
  int hit = 0;
  for (const auto& c : out) hit += c.cached_tokens >= 64;
  EXPECT_GE(hit, 60) << "all but the first resume at least at the shared prompt's full pages";
  EXPECT_GE(st.prefix_cache_hits, 60 * 64);
}

TEST(PrefixCacheTiny, FewShotPromptsDivergingMidBlock) {
  Rig s;
  s.interval = 0;
  const auto shots = tokens(100, 11);  // diverges at 100: page 6, row 4
  auto on = engine(s, true), off = engine(s, false);
  for (int q = 0; q < 5; ++q) {
    const auto p = cat(shots, tokens(6 + q, 300 + q));
    const Collected a = run_one(*on, request(p, 6, q));
    expect_identical(a, run_one(*off, request(p, 6, q)), "question " + std::to_string(q));
    if (q >= 2) {
      EXPECT_EQ(a.cached_tokens, 100) << "the checkpoint the second question saved";
    }
  }
}

TEST(PrefixCacheTiny, FourSamplesOfOnePrompt) {  // n = 4: distinct seeds
  Rig s;
  s.budget = 32;  // the first sample is still prefilling when the others arrive
  const auto p = tokens(150, 21);
  std::vector<GenerationRequest> reqs;
  for (int i = 0; i < 4; ++i) reqs.push_back(request(p, 8, 40 + i));
  EngineStats st;
  const auto out = compare_batch(s, reqs, &st, /*gate=*/true);  // all four queued before the first step
  EXPECT_EQ(out[0].cached_tokens, 0);
  for (int i = 1; i < 4; ++i) EXPECT_EQ(out[size_t(i)].cached_tokens, 149) << "all but the last token, " << i;
}

TEST(PrefixCacheTiny, PreemptionUnderATightPagePool) {
  Rig s;
  s.seqs = 6;
  s.blocks = 14;  // 224 tokens for six requests of up to 110
  s.max_len = 224;
  s.budget = 48;
  const auto shared = tokens(60, 31);
  std::vector<GenerationRequest> reqs;
  for (int i = 0; i < 6; ++i) reqs.push_back(request(cat(shared, tokens(5 + 3 * i, 500 + i)), 40, i));
  EngineStats st;
  compare_batch(s, reqs, &st);
  EXPECT_GT(st.num_preemptions, 0);
  EXPECT_GT(st.prefix_cache_hits, 0);
}

TEST(PrefixCacheTiny, EvictionUnderASnapshotBudgetOfTwo) {
  Rig s;
  s.snapshots = 2;
  auto on = engine(s, true), off = engine(s, false);
  std::vector<std::vector<int32_t>> convos;
  for (int i = 0; i < 4; ++i) convos.push_back(tokens(40 + i, 60 + i));
  for (int round = 0; round < 2; ++round)
    for (size_t i = 0; i < convos.size(); ++i) {
      const Collected a = run_one(*on, request(convos[i], 5, i));
      expect_identical(a, run_one(*off, request(convos[i], 5, i)), "conversation " + std::to_string(i));
      convos[i] = cat(cat(convos[i], a.tokens), tokens(4, 900 + uint32_t(i)));
    }
  const EngineStats st = on->stats();
  EXPECT_EQ(st.snapshots_capacity, 2);
  EXPECT_LE(st.snapshots_used, 2);
  EXPECT_GT(st.snapshot_evictions, 0);
}

TEST(PrefixCacheTiny, AbortInTheMiddleOfAPrefill) {
  Rig s;
  s.budget = 16;  // a 150-token prompt takes ten steps
  const auto shared = tokens(150, 41);
  auto on = engine(s, true);
  auto first = submit_ok(*on, request(cat(shared, tokens(5, 1)), 4, 1));
  auto second = submit_ok(*on, request(cat(shared, tokens(7, 2)), 4, 2));
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  on->abort(first->id);
  const Collected a = collect(*first);
  EXPECT_EQ(a.finish, FinishReason::Abort);
  const Collected b = collect(*second);
  auto off = engine(s, false);
  expect_identical(b, run_one(*off, request(cat(shared, tokens(7, 2)), 4, 2)), "the survivor");
  // a third request with the same prefix hits only what finished computations saved
  const Collected c = run_one(*on, request(cat(shared, tokens(3, 3)), 4, 3));
  expect_identical(c, run_one(*off, request(cat(shared, tokens(3, 3)), 4, 3)), "after the abort");
  EXPECT_GE(c.cached_tokens, 128) << "at least the last 32-token checkpoint";
}

namespace {

// Plants a NaN in the KDA state of the first slice of one chosen step, before running it.
class NanPlanter : public Backend {
 public:
  NanPlanter(std::unique_ptr<Backend> inner, int step) : inner_(std::move(inner)), step_(step) {}
  const ModelConfig& config() const override { return inner_->config(); }
  BackendLimits limits() const override { return inner_->limits(); }
  std::string device_name() const override { return inner_->device_name(); }
  StepResult execute(const StepPlan& plan) override {
    if (!plan.batch.seqs.empty() && ++steps_ == step_) {
      auto& kda = static_cast<CpuBackend&>(*inner_).kda_states();
      kda.state_pool(0)[int64_t(plan.batch.seqs[0].state_slot) * kda.state_slot_stride()] = NAN;
    }
    return inner_->execute(plan);
  }

 private:
  std::unique_ptr<Backend> inner_;
  int step_, steps_ = 0;
};

}  // namespace

TEST(PrefixCacheTiny, APlantedNaNStateIsNeverReused) {
  Rig s;
  s.budget = 32;  // chunks [0, 32) (snapshot at 32), [32, 64) (snapshot at 64), ...
  EngineOptions eo;
  eo.max_num_seqs = s.seqs;
  eo.max_num_batched_tokens = s.budget;
  eo.max_model_len = s.max_len;
  eo.prefix_snapshot_interval = s.interval;
  Engine poisoned(std::make_unique<NanPlanter>(backend(s), 2), nullptr, eo);
  const auto p = tokens(90, 51);
  const Collected a = run_one(poisoned, request(p, 4, 1));
  EXPECT_EQ(a.finish, FinishReason::Error) << "its logits are NaN";
  EngineStats st = poisoned.stats();
  EXPECT_GE(st.snapshots_nonfinite, 1) << "the save at 64 (the step that samples NaN logits fails)";
  // the same prompt again: only the state saved before the NaN (at 32) may be reused
  const Collected b = run_one(poisoned, request(p, 4, 1));
  EXPECT_EQ(b.cached_tokens, 32);
  auto off = engine(s, false);
  expect_identical(b, run_one(*off, request(p, 4, 1)), "after the NaN");
}

namespace {

// While closed, runs a step only when the test allows one more (allow()); blocked() tells that the step thread
// waits inside execute.
class StepGate : public Backend {
 public:
  explicit StepGate(std::unique_ptr<Backend> inner) : inner_(std::move(inner)) {}
  const ModelConfig& config() const override { return inner_->config(); }
  BackendLimits limits() const override { return inner_->limits(); }
  std::string device_name() const override { return inner_->device_name(); }
  StepResult execute(const StepPlan& plan) override {
    blocked_.store(true);
    while (!open_.load() && allowed_.load() <= run_.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    blocked_.store(false);
    ++run_;
    return inner_->execute(plan);
  }
  void close() {
    allowed_.store(run_.load());
    open_.store(false);
  }
  void open() { open_.store(true); }
  void allow() { ++allowed_; }
  bool blocked() const { return blocked_.load(); }

 private:
  std::unique_ptr<Backend> inner_;
  std::atomic<int64_t> allowed_{0}, run_{0};
  std::atomic<bool> open_{true}, blocked_{false};
};

}  // namespace

// Engine::reset_prefix_cache (POST /reset_prefix_cache): a second identical request hits; after the reset a
// third does not, and gives the same tokens bit for bit; the hit counters stay. With the cache off: nothing to do.
TEST(PrefixCacheTiny, ResetPrefixCacheBetweenIdenticalRequests) {
  Rig s;
  auto e = engine(s, true);
  const auto prompt = tokens(70, 61);
  const Collected first = run_one(*e, request(prompt, 8, 5));
  EXPECT_EQ(first.cached_tokens, 0);
  const Collected second = run_one(*e, request(prompt, 8, 5));
  EXPECT_EQ(second.cached_tokens, 64) << "the last 32-token checkpoint before the prompt's last token";
  expect_identical(second, first, "the hit");
  const int64_t hits = e->stats().prefix_cache_hits;
  const PrefixCacheResetResult r = e->reset_prefix_cache(std::chrono::seconds(60));
  ASSERT_EQ(r.status, PrefixCacheResetResult::Status::Done) << r.message;
  EXPECT_TRUE(r.ok());
  EXPECT_GT(r.snapshots_freed, 0);
  EXPECT_GE(r.pages_unregistered, 4) << "the prompt's full pages";
  EXPECT_NE(r.message.find("prefix cache reset"), std::string::npos) << r.message;
  const Collected third = run_one(*e, request(prompt, 8, 5));
  EXPECT_EQ(third.cached_tokens, 0) << "nothing cached after the reset";
  expect_identical(third, first, "after the reset");
  EXPECT_EQ(e->stats().prefix_cache_hits, hits) << "the totals stay; the third added none";
  EXPECT_EQ(run_one(*e, request(prompt, 8, 5)).cached_tokens, 64) << "cached again";

  auto off = engine(s, false);
  const PrefixCacheResetResult d = off->reset_prefix_cache(std::chrono::seconds(60));
  EXPECT_EQ(d.status, PrefixCacheResetResult::Status::Disabled);
  EXPECT_TRUE(d.ok());
  EXPECT_NE(d.message.find("nothing to flush"), std::string::npos) << d.message;
}

// While a request is in progress the reset is refused, naming it, and nothing changes; one the step thread cannot
// take up in time (a step still running) times out.
TEST(PrefixCacheTiny, ResetPrefixCacheIsRefusedWhileARequestIsInProgress) {
  Rig s;
  auto owned = std::make_unique<StepGate>(backend(s));
  StepGate& gate = *owned;
  Engine e(std::move(owned), nullptr, engine_options(s, true));
  const auto prompt = tokens(70, 62);
  run_one(e, request(prompt, 8, 5));
  ASSERT_GT(e.stats().snapshots_used, 0);

  gate.close();
  auto b = submit_ok(e, request(cat(prompt, tokens(5, 63)), 40, 6));
  while (!gate.blocked()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const PrefixCacheResetResult late = e.reset_prefix_cache(std::chrono::milliseconds(100));
  EXPECT_EQ(late.status, PrefixCacheResetResult::Status::Unavailable) << late.message;
  EXPECT_NE(late.message.find("within 100 ms"), std::string::npos) << late.message;

  auto busy = std::async(std::launch::async, [&] { return e.reset_prefix_cache(std::chrono::seconds(60)); });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  for (int i = 0; i < 30 && busy.wait_for(std::chrono::milliseconds(20)) != std::future_status::ready; ++i)
    gate.allow();  // one step at a time: the request (40 tokens) is still running after these
  ASSERT_EQ(busy.wait_for(std::chrono::seconds(0)), std::future_status::ready);
  const PrefixCacheResetResult r = busy.get();
  EXPECT_EQ(r.status, PrefixCacheResetResult::Status::Busy) << r.message;
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.running + r.waiting, 1);
  EXPECT_NE(r.message.find("1 request is in progress"), std::string::npos) << r.message;
  EXPECT_GT(e.stats().snapshots_used, 0) << "nothing changed";

  gate.open();
  const Collected done = collect(*b);
  EXPECT_EQ(done.finish, FinishReason::Length);
  EXPECT_EQ(done.tokens.size(), 40u);
  EXPECT_EQ(run_one(e, request(prompt, 8, 5)).cached_tokens, 64) << "the first request's checkpoint survived";
  EXPECT_EQ(e.reset_prefix_cache(std::chrono::seconds(60)).status, PrefixCacheResetResult::Status::Done);
}
