// A split the model does not divide into is rejected by name: one check per sharded dimension (KDA
// heads, MLA heads, dense intermediate, vocabulary, routed experts' width, shared experts' width,
// expert count), the sizes themselves, and the same error from the backend a server would build.
#include <gtest/gtest.h>

#include "core/error.h"
#include "dist/parallel_config.h"
#include "dist_test_util.h"
#include "engine/backend_factory.h"

namespace ds::test {
namespace {

// The error of validating `p` against the 4-head variant with `edit` applied ("" : accepted).
template <class Edit>
std::string error_of(const ParallelConfig& p, Edit edit) {
  nlohmann::json j = four_head_config_json();
  edit(j);
  try {
    p.validate(ModelConfig::from_json(j));
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

TEST(ParallelConfig, EveryShardedDimensionThatDoesNotDivideIsNamed) {
  auto none = [](nlohmann::json&) {};
  EXPECT_EQ(error_of(layout(4), none), "");
  EXPECT_EQ(error_of(layout(4, true), none), "");
  EXPECT_EQ(error_of(layout(1, true, 8), none), "");  // 16 experts over 8 ranks, attention replicated
  EXPECT_TRUE(has(error_of(layout(4), [](nlohmann::json& j) { j["linear_attn_config"]["num_heads"] = 6; }),
                  "linear_attn_config.num_heads (6) is not divisible by --tensor-parallel-size 4"));
  EXPECT_TRUE(has(error_of(layout(4), [](nlohmann::json& j) { j["num_attention_heads"] = j["num_key_value_heads"] = 6; }),
                  "num_attention_heads (6) is not divisible by --tensor-parallel-size 4"));
  EXPECT_TRUE(has(error_of(layout(4), [](nlohmann::json& j) { j["intermediate_size"] = 510; }),
                  "intermediate_size (510) is not divisible by --tensor-parallel-size 4"));
  EXPECT_TRUE(has(error_of(layout(4), [](nlohmann::json& j) { j["vocab_size"] = 2046; }),
                  "vocab_size (2046) is not divisible by --tensor-parallel-size 4"));
  EXPECT_TRUE(has(error_of(layout(4), [](nlohmann::json& j) { j["moe_intermediate_size"] = 66; }),
                  "moe_intermediate_size (66) is not divisible by --tensor-parallel-size 4"));
  // With EP the routed experts stay whole: only the shared experts' width must divide.
  const std::string shared = error_of(layout(4, true), [](nlohmann::json& j) { j["moe_intermediate_size"] = 66; });
  EXPECT_TRUE(has(shared, "the shared experts' width (moe_intermediate_size x num_shared_experts) (66) is not "
                          "divisible by --tensor-parallel-size 4"))
      << shared;
  EXPECT_FALSE(has(shared, "num_experts")) << shared;
  EXPECT_TRUE(has(error_of(layout(4, true), [](nlohmann::json& j) { j["num_experts"] = 18; }),
                  "num_experts (18) is not divisible by --tensor-parallel-size 4 (--enable-expert-parallel)"));
  EXPECT_TRUE(has(error_of(layout(1, true, 4), [](nlohmann::json& j) { j["num_experts"] = 18; }),
                  "num_experts (18) is not divisible by the expert-parallel size 4"));
  // Attention replicated (EP only): the heads need not divide.
  EXPECT_EQ(error_of(layout(1, true, 4), [](nlohmann::json& j) { j["linear_attn_config"]["num_heads"] = 3; }), "");
  // Several problems: all of them in one message.
  const std::string two = error_of(layout(8), [](nlohmann::json& j) { j["vocab_size"] = 2044; });
  EXPECT_TRUE(has(two, "linear_attn_config.num_heads (4)") && has(two, "vocab_size (2044)")) << two;
}

TEST(ParallelConfig, SizesAreChecked) {
  for (int bad : {0, 3, 6, 16}) {
    SCOPED_TRACE(bad);
    EXPECT_THROW(layout(bad).validate(), Error);
  }
  try {
    layout(3).validate();
  } catch (const Error& e) {
    EXPECT_TRUE(has(e.what(), "--tensor-parallel-size 3: expected 1, 2, 4 or 8")) << e.what();
  }
  EXPECT_THROW(layout(2, false, 2).validate(), Error);  // an EP size without EP
  EXPECT_THROW(layout(2, true, 4).validate(), Error);   // TP must be 1 or the EP size
  EXPECT_EQ(layout(2, true).world_size(), 2);
  EXPECT_EQ(layout(1, true, 4).world_size(), 4);
  EXPECT_EQ(layout(4).shard(3).rank, 3);
  EXPECT_THROW(layout(4).shard(4), Error);
}

TEST(ParallelConfig, TheBackendFactoryRejectsTheTinyCheckpointAtTp4ByName) {
  BackendOptions o;
  o.model_dir = tiny_dir();
  o.parallel = layout(4);
  try {
    create_backend(o);
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    EXPECT_TRUE(has(e.what(), "linear_attn_config.num_heads (2) is not divisible by --tensor-parallel-size 4")) << e.what();
    EXPECT_TRUE(has(e.what(), "num_attention_heads (2) is not divisible by --tensor-parallel-size 4")) << e.what();
  }
  o.parallel = layout(2);
  o.device = "cuda";
  if (!cuda_available()) {  // (with a GPU this builds the parallel CUDA backend: test_gpu's TensorParallelCuda)
    try {
      create_backend(o);
      ADD_FAILURE() << "accepted";
    } catch (const Error& e) {
      EXPECT_TRUE(has(e.what(), "device 'cuda' was asked for but")) << e.what();
    }
  }
}

}  // namespace
}  // namespace ds::test
