// ModelConfig: the fixtures' configs parse into the right layer map, MoE knobs are honoured, and
// unsupported or inconsistent configs are rejected with a message naming the field.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "config/model_config.h"
#include "core/error.h"

namespace ds {
namespace {

using json = nlohmann::json;

json load(const std::string& rel) {
  std::ifstream f(std::string(DS_FIXTURES_DIR) + "/" + rel);
  return json::parse(f);
}
json tiny() { return load("tiny/model/config.json"); }

// Parsing must fail with a message containing `needle`.
void expect_rejected(const json& j, const std::string& needle) {
  try {
    ModelConfig::from_json(j);
    ADD_FAILURE() << "accepted a config that should fail with '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << "message: " << e.what();
  }
}

TEST(ModelConfig, TinyFixture) {
  const auto c = ModelConfig::from_file(std::string(DS_FIXTURES_DIR) + "/tiny/model/config.json");
  EXPECT_EQ(c.num_layers, 8);
  EXPECT_EQ(c.hidden_size, 256);
  EXPECT_EQ(c.vocab_size, 2048);
  const std::vector<AttnKind> want = {AttnKind::KDA, AttnKind::KDA, AttnKind::KDA, AttnKind::MLA,
                                      AttnKind::KDA, AttnKind::KDA, AttnKind::KDA, AttnKind::MLA};
  EXPECT_EQ(c.attn, want);
  EXPECT_EQ(c.ffn[0], FfnKind::Dense);
  for (int l = 1; l < 8; ++l) EXPECT_EQ(c.ffn[size_t(l)], FfnKind::MoE) << l;
  EXPECT_EQ(c.attn_index(3), 0);
  EXPECT_EQ(c.attn_index(7), 1);
  EXPECT_EQ(c.attn_index(4), 3);
  EXPECT_EQ(c.kda.num_heads, 2);
  EXPECT_EQ(c.kda.head_dim, 128);
  EXPECT_EQ(c.kda.conv_kernel, 4);
  EXPECT_EQ(c.mla.latent_dim(), 576);
  EXPECT_EQ(c.mla.qk_head_dim(), 192);
  EXPECT_EQ(c.moe.num_experts, 16);
  EXPECT_EQ(c.moe.top_k, 4);
  EXPECT_EQ(c.moe.num_shared_experts, 1);
  EXPECT_FLOAT_EQ(c.moe.routed_scaling_factor, 2.446f);
  EXPECT_FALSE(c.moe.biased_weights);
  EXPECT_FLOAT_EQ(c.rms_norm_eps, 1e-5f);
  EXPECT_FLOAT_EQ(c.kv_a_norm_eps, 1e-6f);
  EXPECT_EQ(c.eos_token_ids, std::vector<int>{1792});
}

TEST(ModelConfig, RealModelLayerMap) {
  const auto c = ModelConfig::from_json(load("kimi-linear-48b-a3b.config.json"));
  EXPECT_EQ(c.num_layers, 27);
  EXPECT_EQ(c.num_kda_layers(), 20);
  EXPECT_EQ(c.num_mla_layers(), 7);
  for (int l : {3, 7, 11, 15, 19, 23, 26}) EXPECT_EQ(c.attn[size_t(l)], AttnKind::MLA) << l;
  for (int l : {0, 1, 2, 4, 24, 25}) EXPECT_EQ(c.attn[size_t(l)], AttnKind::KDA) << l;
  EXPECT_EQ(c.ffn[0], FfnKind::Dense);
  for (int l = 1; l < 27; ++l) EXPECT_EQ(c.ffn[size_t(l)], FfnKind::MoE) << l;
  EXPECT_EQ(c.moe.num_experts, 256);
  EXPECT_EQ(c.moe.top_k, 8);
  EXPECT_EQ(c.intermediate_size, 9216);
}

TEST(ModelConfig, ExpertGroupsAndSharedExperts) {
  auto j = tiny();
  j["num_expert_group"] = 4;
  j["topk_group"] = 2;
  j["num_shared_experts"] = 2;
  auto c = ModelConfig::from_json(j);
  EXPECT_EQ(c.moe.num_expert_group, 4);
  EXPECT_EQ(c.moe.topk_group, 2);
  EXPECT_EQ(c.moe.num_shared_experts, 2);
  j["num_shared_experts"] = 0;
  EXPECT_EQ(ModelConfig::from_json(j).moe.num_shared_experts, 0);
  j["topk_group"] = 5;
  expect_rejected(j, "topk_group");
  j["topk_group"] = 1;  // one kept group holds 4 experts: top-5 is impossible
  j["num_experts_per_token"] = 5;
  expect_rejected(j, "num_experts_per_token");
  j = tiny();
  j["num_expert_group"] = 3;  // 16 experts
  expect_rejected(j, "num_expert_group");
  j = tiny();
  j["num_shared_experts"] = -1;
  expect_rejected(j, "num_shared_experts");
}

TEST(ModelConfig, DenseLayersAndMoeFrequency) {
  auto j = tiny();
  j["first_k_dense_replace"] = 3;
  auto c = ModelConfig::from_json(j);
  for (int l = 0; l < 8; ++l) EXPECT_EQ(c.ffn[size_t(l)], l < 3 ? FfnKind::Dense : FfnKind::MoE) << l;
  j["first_k_dense_replace"] = 1;
  j["moe_layer_freq"] = 2;
  c = ModelConfig::from_json(j);
  for (int l = 0; l < 8; ++l)
    EXPECT_EQ(c.ffn[size_t(l)], (l >= 1 && l % 2 == 0) ? FfnKind::MoE : FfnKind::Dense) << l;
  j["moe_layer_freq"] = 0;
  expect_rejected(j, "moe_layer_freq");
  j = tiny();
  j["first_k_dense_replace"] = 8;  // every layer dense
  c = ModelConfig::from_json(j);
  for (int l = 0; l < 8; ++l) EXPECT_EQ(c.ffn[size_t(l)], FfnKind::Dense);
  j.erase("intermediate_size");
  expect_rejected(j, "intermediate_size");
}

TEST(ModelConfig, UnsupportedKnobsAreRejected) {
  auto j = tiny();
  j["q_lora_rank"] = 1536;
  expect_rejected(j, "q_lora_rank");
  j = tiny();
  j["mla_use_nope"] = false;
  expect_rejected(j, "mla_use_nope");
  j = tiny();
  j["model_type"] = "deepseek_v3";
  expect_rejected(j, "model_type");
  j = tiny();
  j["hidden_act"] = "gelu";
  expect_rejected(j, "hidden_act");
  j = tiny();
  j["num_key_value_heads"] = 1;
  expect_rejected(j, "num_key_value_heads");
  j = tiny();
  j.erase("kv_lora_rank");
  expect_rejected(j, "kv_lora_rank");
  j = tiny();
  j["hidden_size"] = "256";
  expect_rejected(j, "hidden_size");
}

TEST(ModelConfig, BadLayerListsAreRejected) {
  auto j = tiny();
  j["linear_attn_config"]["kda_layers"] = {0, 1, 2, 4, 5, 6};  // 0-indexed by mistake
  expect_rejected(j, "1-indexed");
  j = tiny();
  j["linear_attn_config"]["kda_layers"] = {1, 2, 3, 5, 6};  // layer 7 missing
  expect_rejected(j, "layer 7 (1-indexed) is in neither");
  j = tiny();
  j["linear_attn_config"]["full_attn_layers"] = {3, 4, 8};  // 3 in both lists
  expect_rejected(j, "layer 3 is listed in both");
  j = tiny();
  j["linear_attn_config"]["full_attn_layers"] = {4, 9};
  expect_rejected(j, "full_attn_layers entry 9");
  j = tiny();
  j["linear_attn_config"]["kda_layers"] = "1,2,3";
  expect_rejected(j, "kda_layers");
  j = tiny();
  j["linear_attn_config"].erase("full_attn_layers");
  expect_rejected(j, "full_attn_layers");
}

TEST(ModelConfig, FileErrorsNameThePath) {
  try {
    ModelConfig::from_file("/nonexistent/config.json");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/config.json"), std::string::npos);
  }
}

}  // namespace
}  // namespace ds
