// The engine on the real tiny Kimi-Linear checkpoint (CPU backend, float32): greedy continuations
// through the whole stack equal the float64 reference's, alone, chunked, batched and preempted.
#include <gtest/gtest.h>

#include "core/error.h"
#include "engine/backend_factory.h"
#include "engine/engine.h"
#include "engine_util.h"
#include "model/safetensors.h"
#include "tokenizer/tokenizer.h"

using namespace ds;
using namespace ds::test;

namespace {

const std::string kFixtures = DS_FIXTURES_DIR;

std::vector<int32_t> read_ids(const Checkpoint& ref, const std::string& name) {
  const TensorInfo& t = ref.get(name);
  EXPECT_EQ(t.dtype, DType::I32) << name;
  const auto* p = static_cast<const int32_t*>(t.data);
  return std::vector<int32_t>(p, p + t.numel());
}

struct Golden {
  std::vector<int32_t> ids, greedy;
};

Golden golden(const std::string& key) {
  Checkpoint ref = Checkpoint::open(kFixtures + "/tiny/reference.safetensors");
  return {read_ids(ref, key + ".ids"), read_ids(ref, key + ".greedy")};
}

BackendOptions tiny_backend(int max_num_seqs, int num_blocks = 0) {
  BackendOptions b;
  b.device = "cpu";
  b.model_dir = kFixtures + "/tiny/model";
  b.max_num_seqs = max_num_seqs;
  b.block_size = 16;
  b.num_blocks = num_blocks;
  b.max_model_len = 512;
  return b;
}

GenerationRequest greedy_request(const Golden& g) {
  GenerationRequest r;
  r.prompt_tokens = g.ids;
  r.max_tokens = int(g.greedy.size());
  r.sampling.temperature = 0.0f;
  r.ignore_eos = true;  // compare all 16 reference tokens
  r.detokenize = false;
  return r;
}

}  // namespace

TEST(EngineTiny, GreedyLen5MatchesTheReference) {
  const Golden g = golden("len5");
  ASSERT_EQ(g.ids.size(), 5u);
  ASSERT_EQ(g.greedy.size(), 16u);
  EngineOptions eo;
  eo.max_num_seqs = 4;
  Engine e(create_backend(tiny_backend(4)), nullptr, eo);
  Collected c = run_one(e, greedy_request(g));
  EXPECT_EQ(c.finish, FinishReason::Length);
  EXPECT_EQ(c.tokens, g.greedy);
}

TEST(EngineTiny, ChunkedBatchedAndPreemptedGreedyMatchTheReference) {
  const Golden g5 = golden("len5"), g150 = golden("len150");
  auto tok = Tokenizer::from_dir(kFixtures + "/tiny/tokenizer");
  // A 48-token budget splits the 150-token prompt into 4 chunks that share steps with decodes;
  // 12 pages of 16 tokens (192 tokens) cannot hold all six requests (4 x 21 + 2 x 166 tokens), so
  // requests are preempted and recomputed.
  EngineOptions eo;
  eo.max_num_seqs = 6;
  eo.max_num_batched_tokens = 48;
  eo.max_model_len = 192;
  Engine e(create_backend(tiny_backend(6, 12)), tok, eo);
  std::vector<std::shared_ptr<RequestStream>> streams;
  std::vector<const Golden*> want;
  for (int i = 0; i < 6; ++i) {
    const Golden& g = i % 3 == 1 ? g150 : g5;
    GenerationRequest r = greedy_request(g);
    r.detokenize = true;
    streams.push_back(submit_ok(e, r));
    want.push_back(&g);
  }
  for (size_t i = 0; i < streams.size(); ++i) {
    Collected c = collect(*streams[i], 600);
    EXPECT_EQ(c.tokens, want[i]->greedy) << "request " << i;
    EXPECT_EQ(c.text, tok->decode(want[i]->greedy, true)) << "request " << i;
  }
  EngineStats st = e.stats();
  EXPECT_GT(st.num_preemptions, 0);
  EXPECT_EQ(st.generation_tokens_total, 6 * 16);
  EXPECT_EQ(st.kv_usage, 0.0);
}

TEST(EngineTiny, BackendFactoryErrors) {
  BackendOptions b = tiny_backend(1);
  b.device = "tpu";
  EXPECT_THROW(create_backend(b), Error);
  if (!cuda_available()) {
    b.device = "cuda";
    try {
      create_backend(b);
      ADD_FAILURE() << "cuda backend without a GPU";
    } catch (const Error& err) {
      EXPECT_NE(std::string(err.what()).find("cuda"), std::string::npos) << err.what();
    }
  }
  b.device = "cpu";
  b.model_dir = kFixtures + "/no-such-model";
  EXPECT_THROW(create_backend(b), Error);
}

// Prompt logprobs (GenerationRequest::prompt_logprobs) through the whole stack: each prompt token after the
// first gets its log-softmax under the float64 reference's logits of the position before it, with the top
// alternatives, whether the prompt runs whole or in 48-token chunks beside another request, with prefix caching
// on and the prompt's prefix in the cache (a second turn: the len150 prompt and its 16 reference tokens, whose
// logits the reference holds too); the same turn unscored is served from the cache and continues alike.
TEST(EngineTiny, PromptLogprobsMatchTheReferenceLogits) {
  const Golden g = golden("len150");
  Checkpoint ref = Checkpoint::open(kFixtures + "/tiny/reference.safetensors");
  const TensorInfo& lt = ref.get("len150.full_logits");  // [150 + 16, vocab]
  ASSERT_EQ(lt.dtype, DType::F32);
  const int V = int(lt.shape[1]);
  const float* L = static_cast<const float*>(lt.data);
  auto log_softmax_at = [&](int row, int32_t token) {
    double mx = -1e300, s = 0;
    for (int v = 0; v < V; ++v) mx = std::max(mx, double(L[size_t(row) * V + v]));
    for (int v = 0; v < V; ++v) s += std::exp(double(L[size_t(row) * V + v]) - mx);
    return double(L[size_t(row) * V + token]) - mx - std::log(s);
  };
  std::vector<int32_t> turn2 = g.ids;
  turn2.insert(turn2.end(), g.greedy.begin(), g.greedy.end());
  ASSERT_EQ(int64_t(turn2.size()), lt.shape[0]);
  for (const int budget : {4096, 48}) {
    EngineOptions eo;
    eo.max_num_seqs = 4;
    eo.max_num_batched_tokens = budget;
    eo.enable_prefix_caching = true;
    BackendOptions bo = tiny_backend(4, 64);
    bo.num_snapshots = 16;
    Engine e(create_backend(bo), nullptr, eo);
    EXPECT_EQ(run_one(e, greedy_request(g)).tokens, g.greedy);  // turn 1: its state is cached at 165 tokens
    GenerationRequest r = greedy_request(g);
    r.prompt_tokens = turn2;
    r.max_tokens = 2;
    r.prompt_logprobs = 2;
    auto scored = submit_ok(e, r);
    auto beside = submit_ok(e, greedy_request(golden("len5")));
    const Collected c = collect(*scored);
    const Collected b = collect(*beside);
    EXPECT_EQ(b.tokens, golden("len5").greedy);
    EXPECT_TRUE(b.prompt_logprobs.empty());
    EXPECT_EQ(c.cached_tokens, 0) << "a scored prompt is computed whole";
    ASSERT_EQ(c.prompt_logprobs.size(), turn2.size() - 1) << "budget " << budget;
    double worst = 0;
    for (size_t i = 0; i + 1 < turn2.size(); ++i) {
      const SampleResult& s = c.prompt_logprobs[i];
      EXPECT_EQ(s.token, turn2[i + 1]);
      worst = std::max(worst, std::abs(double(s.logprob) - log_softmax_at(int(i), turn2[i + 1])));
      ASSERT_EQ(s.top_logprobs.size(), 2u);
      for (const auto& [id, lp] : s.top_logprobs) worst = std::max(worst, std::abs(double(lp) - log_softmax_at(int(i), id)));
      EXPECT_GE(s.top_logprobs[0].second, s.top_logprobs[1].second);
    }
    std::printf("  budget %d: worst |logprob - reference| %.3g\n", budget, worst);
    EXPECT_LT(worst, 1e-4);  // fp32 logits within ~1e-5 relative of the float64 reference, |logit| < 10
    GenerationRequest control = r;  // unscored: served from the cache, the same continuation
    control.prompt_logprobs = -1;
    const Collected k = run_one(e, control);
    EXPECT_GT(k.cached_tokens, 0) << "the cache should serve the unscored turn (else the check above is vacuous)";
    EXPECT_EQ(k.tokens, c.tokens);
    EXPECT_TRUE(k.prompt_logprobs.empty());
  }
}
