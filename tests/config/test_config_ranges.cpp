// config.json fields are type- and range-checked (issue 11): integers must be integers within
// their bounds (no silent wrap of 2^32+256, no truncation of 256.7), sizes that multiply have
// sane upper bounds, and every error names the field instead of quoting the JSON library.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "config/model_config.h"
#include "core/error.h"

namespace ds {
namespace {

using json = nlohmann::json;

json tiny() {
  std::ifstream f(std::string(DS_FIXTURES_DIR) + "/tiny/model/config.json");
  return json::parse(f);
}

// Rejected with a ds::Error whose message contains every needle and no JSON-library text.
void expect_rejected(const json& j, std::initializer_list<std::string> needles) {
  try {
    ModelConfig::from_json(j);
    ADD_FAILURE() << "accepted " << j.dump().substr(0, 200);
  } catch (const Error& e) {
    std::string m = e.what();
    for (const auto& n : needles) EXPECT_NE(m.find(n), std::string::npos) << "message: " << m << " (wanted " << n << ")";
    EXPECT_EQ(m.find("json.exception"), std::string::npos) << m;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not a ds::Error: " << e.what();
  }
}

TEST(ConfigRanges, IntegersDoNotWrapOrTruncate) {
  json j = tiny();
  j["hidden_size"] = (uint64_t(1) << 32) + 256;  // would wrap to 256
  expect_rejected(j, {"hidden_size", "outside"});
  j = tiny();
  j["hidden_size"] = 256.7;
  expect_rejected(j, {"hidden_size", "must be an integer"});
  j = tiny();
  j["hidden_size"] = 256.0;
  expect_rejected(j, {"hidden_size", "must be an integer"});
  j = tiny();
  j["vocab_size"] = uint64_t(18446744073709551615ull);
  expect_rejected(j, {"vocab_size", "outside"});
  j = tiny();
  j["vocab_size"] = -2048;
  expect_rejected(j, {"vocab_size"});
  j = tiny();
  j["linear_attn_config"]["num_heads"] = int64_t(1) << 31;
  expect_rejected(j, {"linear_attn_config.num_heads", "outside"});
  j = tiny();
  j["linear_attn_config"]["kda_layers"][0] = (int64_t(1) << 32) + 1;  // would wrap to layer 1
  expect_rejected(j, {"linear_attn_config.kda_layers[0]"});
  j = tiny();
  j["max_position_embeddings"] = -5;
  expect_rejected(j, {"max_position_embeddings"});
}

TEST(ConfigRanges, HugeSizesAreRejectedBeforeAllocating) {
  json j = tiny();
  j["num_hidden_layers"] = 2147483647;  // used to end in a bare std::bad_alloc
  expect_rejected(j, {"num_hidden_layers", "outside 1..1024"});
  for (const char* f : {"num_experts", "moe_intermediate_size", "intermediate_size", "num_attention_heads",
                        "kv_lora_rank", "v_head_dim", "num_shared_experts"}) {
    j = tiny();
    j[f] = 1 << 30;
    expect_rejected(j, {f, "outside"});
  }
}

TEST(ConfigRanges, WrongTypesNameTheField) {
  json j = tiny();
  j["eos_token_id"] = json::array({1792, "x"});
  expect_rejected(j, {"eos_token_id[1]", "must be an integer"});
  j = tiny();
  j["eos_token_id"] = "1792";
  expect_rejected(j, {"eos_token_id", "must be an integer"});
  j = tiny();
  j["rms_norm_eps"] = "small";
  expect_rejected(j, {"rms_norm_eps", "must be a number"});
  j = tiny();
  j["rms_norm_eps"] = 1e300;  // inf as a float
  expect_rejected(j, {"rms_norm_eps", "outside"});
  j = tiny();
  j["routed_scaling_factor"] = -1.0;
  expect_rejected(j, {"routed_scaling_factor"});
  j = tiny();
  j["bos_token_id"] = true;
  expect_rejected(j, {"bos_token_id"});
  j = tiny();
  j["linear_attn_config"]["short_conv_kernel_size"] = 1.5;
  expect_rejected(j, {"linear_attn_config.short_conv_kernel_size"});
}

TEST(ConfigRanges, InvalidJsonFileIsReportedWithoutLibraryText) {
  std::string path = testing::TempDir() + "/bad_config.json";
  {
    std::ofstream f(path);
    f << "{\"model_type\": \"kimi_linear\", ";
  }
  try {
    ModelConfig::from_file(path);
    ADD_FAILURE() << "accepted truncated JSON";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find(path), std::string::npos) << m;
    EXPECT_NE(m.find("not valid JSON"), std::string::npos) << m;
    EXPECT_EQ(m.find("json.exception"), std::string::npos) << m;
  }
  std::remove(path.c_str());
}

TEST(ConfigRanges, TheFixtureStillLoads) {
  ModelConfig c = ModelConfig::from_json(tiny());
  EXPECT_EQ(c.hidden_size, 256);
  EXPECT_EQ(c.num_layers, 8);
}

}  // namespace
}  // namespace ds
