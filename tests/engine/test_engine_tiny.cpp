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
