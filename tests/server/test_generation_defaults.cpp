// vLLM's --generation-config / --override-generation-config: reading a generation config (the sampling
// fields, range-checked, others skipped), merging an override, the modes, and the server applying the
// defaults to the fields a request leaves out on every endpoint (a request's own values win; max_new_tokens
// caps max_tokens); --return-tokens-as-token-ids as the default of return_tokens_as_token_ids; --seed.
#include <gtest/gtest.h>

#include "core/error.h"
#include "server/generation_defaults.h"
#include "server_fixture.h"

namespace ds::test {
namespace {

using server::SamplingDefaults;

const std::string kFolder = std::string(DS_FIXTURES_DIR) + "/generation_config";

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(GenerationDefaults, ReadsTheSamplingFieldsAndSkipsTheRest) {
  const SamplingDefaults d = server::sampling_defaults_from_json(
      json{{"temperature", 0.6}, {"top_p", 0.95}, {"top_k", 20}, {"min_p", 0.01}, {"repetition_penalty", 1.05},
           {"max_new_tokens", 4096}, {"eos_token_id", json::array({1, 2})}, {"do_sample", true}},
      "x");
  EXPECT_EQ(d.temperature, 0.6);
  EXPECT_EQ(d.top_p, 0.95);
  EXPECT_EQ(d.top_k, 20);
  EXPECT_EQ(d.min_p, 0.01);
  EXPECT_EQ(d.repetition_penalty, 1.05);
  EXPECT_EQ(d.max_tokens, 4096);
  EXPECT_EQ(d.describe(), "temperature=0.6, top_p=0.95, top_k=20, min_p=0.01, repetition_penalty=1.05, max_new_tokens=4096");
  EXPECT_TRUE(server::sampling_defaults_from_json(json{{"bos_token_id", 1}}, "x").empty());
  EXPECT_EQ(server::sampling_defaults_from_json(json{{"top_k", 0}}, "x").top_k, -1);  // HF's "off"
}

TEST(GenerationDefaults, BadValuesNameTheSourceAndTheKey) {
  auto bad = [](const json& j) { return error_of([&] { server::sampling_defaults_from_json(j, "cfg.json"); }); };
  EXPECT_NE(bad(json{{"temperature", 3}}).find("cfg.json: 'temperature' must be in [0, 2], got 3"), std::string::npos)
      << bad(json{{"temperature", 3}});
  EXPECT_NE(bad(json{{"top_p", 0}}).find("'top_p' must be in (0"), std::string::npos);
  EXPECT_NE(bad(json{{"top_k", 1.5}}).find("'top_k' must be an integer"), std::string::npos);
  EXPECT_NE(bad(json{{"max_new_tokens", 0}}).find("'max_new_tokens' must be in [1,"), std::string::npos);
  EXPECT_NE(bad(json{{"temperature", "hot"}}).find("'temperature' must be a number"), std::string::npos);
  EXPECT_NE(bad(json::array()).find("must be a JSON object"), std::string::npos);
  EXPECT_NE(error_of([] { server::parse_generation_config_override("{oops"); }).find("not valid JSON"),
            std::string::npos);
}

TEST(GenerationDefaults, ModesAndTheOverride) {
  std::string found;
  // auto: the model directory's file; the tiny model has none
  EXPECT_TRUE(server::load_sampling_defaults("auto", DS_FIXTURES_DIR "/tiny/model", "", &found).empty());
  EXPECT_EQ(found, "");
  SamplingDefaults d = server::load_sampling_defaults("auto", kFolder, "", &found);
  EXPECT_EQ(found, kFolder + "/generation_config.json");
  EXPECT_EQ(d.temperature, 0.6);
  EXPECT_EQ(d.top_k, -1);
  EXPECT_EQ(d.max_tokens, 5);
  // a folder, with an override on top
  d = server::load_sampling_defaults(kFolder, "/nonexistent-model", R"({"temperature": 0.2, "min_p": 0.1})");
  EXPECT_EQ(d.temperature, 0.2);
  EXPECT_EQ(d.min_p, 0.1);
  EXPECT_EQ(d.top_p, 0.95);
  // vllm: only the override
  d = server::load_sampling_defaults("vllm", kFolder, R"({"top_p": 0.5})");
  EXPECT_FALSE(d.temperature);
  EXPECT_EQ(d.top_p, 0.5);
  EXPECT_NE(error_of([] { server::check_generation_config_mode("/no/such/folder"); }).find("'auto'"),
            std::string::npos);
}

server::SamplingDefaults fixture_defaults() {
  SamplingDefaults d;
  d.temperature = 0.25;
  d.top_p = 0.5;
  d.top_k = 3;
  d.repetition_penalty = 1.2;
  d.max_tokens = 4;
  return d;
}

TEST(GenerationDefaults, TheServerFillsWhatARequestLeavesOut) {
  ServerFixture f("", 1u << 20, 256, false, [](server::ServerOptions& o) { o.sampling_defaults = fixture_defaults(); });
  // every endpoint: defaults applied, max_tokens capped at max_new_tokens
  ASSERT_EQ(f.post("/v1/completions", {{"prompt", "hi"}}).status, 200);
  ASSERT_EQ(f.post("/v1/chat/completions", {{"messages", json::array({{{"role", "user"}, {"content", "hi"}}})}}).status,
            200);
  ASSERT_EQ(f.post("/v1/responses", {{"input", "hi"}}).status, 200);
  auto sub = f.engine.submitted_copy();
  ASSERT_EQ(sub.size(), 3u);
  for (const auto& s : sub) {
    EXPECT_FLOAT_EQ(s.sampling.temperature, 0.25f);
    EXPECT_FLOAT_EQ(s.sampling.top_p, 0.5f);
    EXPECT_EQ(s.sampling.top_k, 3);
    EXPECT_FLOAT_EQ(s.sampling.repetition_penalty, 1.2f);
    EXPECT_FLOAT_EQ(s.sampling.min_p, 0.f);  // not in the defaults: the API's
    EXPECT_EQ(s.max_tokens, 4);
  }
  // a request's own values win; a larger max_tokens is still capped, a smaller one kept
  ASSERT_EQ(f.post("/v1/completions", {{"prompt", "hi"}, {"temperature", 0.9}, {"top_k", -1}, {"max_tokens", 50}}).status,
            200);
  ASSERT_EQ(f.post("/v1/chat/completions", {{"messages", json::array({{{"role", "user"}, {"content", "hi"}}})},
                                            {"top_p", 1.0},
                                            {"max_completion_tokens", 2}})
                .status,
            200);
  sub = f.engine.submitted_copy();
  ASSERT_EQ(sub.size(), 5u);
  EXPECT_FLOAT_EQ(sub[3].sampling.temperature, 0.9f);
  EXPECT_EQ(sub[3].sampling.top_k, -1);
  EXPECT_EQ(sub[3].max_tokens, 4);
  EXPECT_FLOAT_EQ(sub[4].sampling.top_p, 1.f);
  EXPECT_FLOAT_EQ(sub[4].sampling.temperature, 0.25f);
  EXPECT_EQ(sub[4].max_tokens, 2);
}

TEST(GenerationDefaults, TokensAsIdsIsTheRequestFieldsDefault) {
  ServerFixture f("", 1u << 20, 256, false, [](server::ServerOptions& o) { o.sampling_defaults.tokens_as_ids = true; });
  const json msgs = json::array({{{"role", "user"}, {"content", "hi"}}});
  auto first_token = [&](const json& extra) {
    json body = {{"messages", msgs}, {"max_tokens", 1}, {"logprobs", true}};
    body.update(extra);
    auto r = f.post("/v1/chat/completions", body);
    EXPECT_EQ(r.status, 200) << r.body;
    return json::parse(r.body)["choices"][0]["logprobs"]["content"][0]["token"].get<std::string>();
  };
  EXPECT_EQ(first_token(json::object()).rfind("token_id:", 0), 0u);
  EXPECT_NE(first_token({{"return_tokens_as_token_ids", false}}).rfind("token_id:", 0), 0u);  // the request wins
}

// --seed: requests without a seed get the same seeds, in arrival order, from one run to the next; a
// request's own seed is untouched; another --seed gives other seeds.
TEST(ServerSeed, UnseededRequestsRepeatAcrossRuns) {
  auto seeds = [](std::optional<uint64_t> seed) {
    ServerFixture f("", 1u << 20, 256, false, [&](server::ServerOptions& o) { o.seed = seed; });
    for (int i = 0; i < 3; ++i) EXPECT_EQ(f.post("/v1/completions", {{"prompt", "hi"}, {"max_tokens", 2}}).status, 200);
    EXPECT_EQ(f.post("/v1/completions", {{"prompt", "hi"}, {"max_tokens", 2}, {"seed", 5}}).status, 200);
    EXPECT_EQ(f.post("/v1/completions", {{"prompt", "hi"}, {"max_tokens", 2}, {"n", 2}}).status, 200);
    std::vector<uint64_t> out;
    for (const auto& r : f.engine.submitted_copy()) out.push_back(r.sampling.seed);
    return out;
  };
  const auto a = seeds(7), b = seeds(7), c = seeds(8), none = seeds(std::nullopt);
  ASSERT_EQ(a.size(), 6u);
  EXPECT_EQ(a, b);
  EXPECT_NE(a[0], c[0]);
  EXPECT_NE(a[0], a[1]);
  EXPECT_EQ(a[3], 5u);           // the request's own
  EXPECT_EQ(a[5], a[4] + 1);     // choice i of one request: base + i, as without --seed
  EXPECT_NE(none, seeds(std::nullopt));  // random without --seed
}

TEST(GenerationDefaults, WithoutDefaultsTheApisOwnApply) {
  ServerFixture f;
  ASSERT_EQ(f.post("/v1/chat/completions", {{"messages", json::array({{{"role", "user"}, {"content", "hi"}}})}}).status,
            200);
  auto s = f.engine.submitted_copy().at(0);
  EXPECT_FLOAT_EQ(s.sampling.temperature, 1.f);
  EXPECT_FLOAT_EQ(s.sampling.top_p, 1.f);
  EXPECT_EQ(s.sampling.top_k, -1);
  EXPECT_FLOAT_EQ(s.sampling.repetition_penalty, 1.f);
  EXPECT_GT(s.max_tokens, 100);  // all the room left
}

}  // namespace
}  // namespace ds::test

namespace ds::test {
namespace {

// vLLM's `priority` request field reaches the engine from every endpoint (the engine decides whether the
// scheduling policy allows it); a non-integer is a 400 naming the field.
TEST(ServerPriority, TheFieldReachesTheEngine) {
  ServerFixture f("", 1u << 20, 256, false);
  ASSERT_EQ(f.post("/v1/completions", {{"prompt", "hi"}, {"max_tokens", 2}, {"priority", -3}}).status, 200);
  ASSERT_EQ(f.post("/v1/chat/completions", {{"messages", json::array({{{"role", "user"}, {"content", "hi"}}})},
                                            {"max_tokens", 2}, {"priority", 7}}).status,
            200);
  ASSERT_EQ(f.post("/v1/responses", {{"input", "hi"}, {"max_output_tokens", 2}, {"priority", 4}}).status, 200);
  ASSERT_EQ(f.post("/v1/completions", {{"prompt", "hi"}, {"max_tokens", 2}}).status, 200);
  const auto sub = f.engine.submitted_copy();
  ASSERT_EQ(sub.size(), 4u);
  EXPECT_EQ(sub[0].priority, -3);
  EXPECT_EQ(sub[1].priority, 7);
  EXPECT_EQ(sub[2].priority, 4);
  EXPECT_EQ(sub[3].priority, 0);
  const auto bad = f.post("/v1/completions", {{"prompt", "hi"}, {"priority", "high"}});
  EXPECT_EQ(bad.status, 400);
  EXPECT_NE(bad.body.find("priority"), std::string::npos) << bad.body;
}

}  // namespace
}  // namespace ds::test
