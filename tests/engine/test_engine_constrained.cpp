// Constrained decoding through the whole engine on the tiny model (CPU backend): its outputs are
// gibberish by design, so the constraints do all the work. Outputs are checked independently of the
// grammar code (nlohmann::json parsing plus per-schema checks, std::regex, the tool-call parser).
#include <gtest/gtest.h>

#include <regex>
#include <set>

#include <nlohmann/json.hpp>

#include "engine/backend_factory.h"
#include "engine/engine.h"
#include "engine_util.h"
#include "grammar/constraint.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tool_parser.h"

using namespace ds;
using namespace ds::test;

namespace {

const std::string kFixtures = DS_FIXTURES_DIR;

struct Tiny {
  std::shared_ptr<Tokenizer> tok = Tokenizer::from_dir(kFixtures + "/tiny/tokenizer");
  std::unique_ptr<Engine> engine;
  Tiny() {
    BackendOptions b;
    b.device = "cpu";
    b.model_dir = kFixtures + "/tiny/model";
    b.max_num_seqs = 8;
    b.block_size = 16;
    b.max_model_len = 1024;
    EngineOptions eo;
    eo.max_num_seqs = 8;
    engine = std::make_unique<Engine>(create_backend(b), tok, eo);
  }
};

Tiny& tiny() {
  static Tiny t;
  return t;
}

GenerationRequest request(uint64_t seed, const ConstraintSpec& spec, int max_tokens = 300) {
  GenerationRequest r;
  r.prompt_tokens = tiny().tok->encode("Give me the answer as JSON:");
  r.max_tokens = max_tokens;
  r.sampling.temperature = 1.0f;
  r.sampling.seed = seed;
  r.grammar = compile_constraint(spec);
  return r;
}

ConstraintSpec schema_spec(const char* s) {
  ConstraintSpec c;
  c.kind = ConstraintSpec::Kind::JsonSchema;
  c.schema = nlohmann::ordered_json::parse(s);
  return c;
}

std::vector<Collected> run_all(std::vector<GenerationRequest> reqs) {
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (auto& r : reqs) streams.push_back(submit_ok(*tiny().engine, std::move(r)));
  std::vector<Collected> out;
  for (auto& s : streams) out.push_back(s ? collect(*s) : Collected{});
  return out;
}

TEST(EngineConstrained, JsonSchemaOutputsAreValid) {
  const char* schema = R"({"type":"object","properties":{
      "name":{"type":"string","maxLength":8},
      "age":{"type":"integer"},
      "color":{"enum":["red","green","blue"]},
      "tags":{"type":"array","items":{"type":"string","maxLength":4},"maxItems":3},
      "ok":{"type":"boolean"},
      "note":{"anyOf":[{"type":"null"},{"type":"string","maxLength":5}]}},
    "required":["name","age","color","tags","ok"]})";
  std::vector<GenerationRequest> reqs;
  for (uint64_t seed = 1; seed <= 8; ++seed) reqs.push_back(request(seed, schema_spec(schema)));
  int distinct = 0;
  std::set<std::string> seen;
  for (const Collected& c : run_all(std::move(reqs))) {
    ASSERT_EQ(c.finish, FinishReason::Stop) << c.text << " " << c.error;
    nlohmann::ordered_json j;
    ASSERT_NO_THROW(j = nlohmann::ordered_json::parse(c.text)) << c.text;
    ASSERT_TRUE(j.is_object()) << c.text;
    ASSERT_TRUE(j.contains("name") && j["name"].is_string() && j["name"].get<std::string>().size() <= 8 * 4) << c.text;
    ASSERT_TRUE(j.contains("age") && j["age"].is_number_integer()) << c.text;
    ASSERT_TRUE(j.contains("color") && (j["color"] == "red" || j["color"] == "green" || j["color"] == "blue")) << c.text;
    ASSERT_TRUE(j.contains("tags") && j["tags"].is_array() && j["tags"].size() <= 3) << c.text;
    for (const auto& t : j["tags"]) ASSERT_TRUE(t.is_string()) << c.text;
    ASSERT_TRUE(j.contains("ok") && j["ok"].is_boolean()) << c.text;
    if (j.contains("note")) {
      ASSERT_TRUE(j["note"].is_null() || j["note"].is_string()) << c.text;
    }
    for (auto it = j.begin(); it != j.end(); ++it)
      ASSERT_TRUE(it.key() == "name" || it.key() == "age" || it.key() == "color" || it.key() == "tags" ||
                  it.key() == "ok" || it.key() == "note") << c.text;
    distinct += seen.insert(c.text).second;
  }
  EXPECT_GT(distinct, 1);  // the model's sampling still chooses within the grammar
}

TEST(EngineConstrained, UnconstrainedOutputIsNotJson) {
  // The control: without the grammar the same requests are not valid JSON documents.
  std::vector<GenerationRequest> reqs;
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    GenerationRequest r = request(seed, schema_spec(R"({"type":"object"})"), 30);
    r.grammar = nullptr;
    reqs.push_back(std::move(r));
  }
  for (const Collected& c : run_all(std::move(reqs))) EXPECT_FALSE(nlohmann::json::accept(c.text)) << c.text;
}

TEST(EngineConstrained, JsonObjectRegexChoiceAndEbnf) {
  ConstraintSpec obj;
  obj.kind = ConstraintSpec::Kind::JsonObject;
  ConstraintSpec re;
  re.kind = ConstraintSpec::Kind::Regex;
  re.pattern = "[A-Z]{2}-\\d{3}(x[a-c]{1,2})?";
  ConstraintSpec ch;
  ch.kind = ConstraintSpec::Kind::Choice;
  ch.choices = {"alpha", "beta", "gamma delta"};
  ConstraintSpec eb;
  eb.kind = ConstraintSpec::Kind::Ebnf;
  eb.grammar = "root ::= \"(\" num (\"+\" num){0,3} \")\"\nnum ::= [1-9][0-9]{0,2}";
  std::vector<GenerationRequest> reqs;
  for (uint64_t seed = 11; seed <= 13; ++seed) {
    reqs.push_back(request(seed, re, 40));
    reqs.push_back(request(seed, ch, 40));
    reqs.push_back(request(seed, eb, 60));
  }
  auto out = run_all(std::move(reqs));
  for (size_t i = 0; i < out.size(); ++i) {
    const Collected& c = out[i];
    ASSERT_EQ(c.finish, FinishReason::Stop) << c.text;
    if (i % 3 == 0) { EXPECT_TRUE(std::regex_match(c.text, std::regex("[A-Z]{2}-[0-9]{3}(x[a-c]{1,2})?"))) << c.text; }
    if (i % 3 == 1) {
      EXPECT_TRUE(c.text == "alpha" || c.text == "beta" || c.text == "gamma delta") << c.text;
    }
    if (i % 3 == 2) {
      EXPECT_TRUE(std::regex_match(c.text, std::regex("\\([1-9][0-9]{0,2}(\\+[1-9][0-9]{0,2}){0,3}\\)"))) << c.text;
    }
  }
  // json_object: max_tokens bounds the nesting the sampler may wander into; a complete one parses.
  int complete = 0;
  std::vector<GenerationRequest> objs;
  for (uint64_t seed = 21; seed <= 26; ++seed) objs.push_back(request(seed, obj, 400));
  for (const Collected& c : run_all(std::move(objs))) {
    if (c.finish != FinishReason::Stop) continue;
    ++complete;
    nlohmann::json j;
    ASSERT_NO_THROW(j = nlohmann::json::parse(c.text)) << c.text;
    EXPECT_TRUE(j.is_object()) << c.text;
  }
  EXPECT_GT(complete, 0);
}

TEST(EngineConstrained, ForcedToolCallParsesWithValidArguments) {
  ConstraintSpec tc;
  tc.kind = ConstraintSpec::Kind::ToolCall;
  tc.tools = {{"get_weather", nlohmann::ordered_json::parse(
                                  R"({"type":"object","properties":{"city":{"type":"string","maxLength":6},
                                     "unit":{"enum":["c","f"]}},"required":["city","unit"]})")},
              {"ping", nullptr}};
  tc.tool_name = "get_weather";
  tc.allow_parallel_tool_calls = false;
  std::vector<GenerationRequest> reqs;
  for (uint64_t seed = 31; seed <= 34; ++seed) {
    GenerationRequest r = request(seed, tc, 120);
    r.skip_special_tokens = false;  // the parser reads the markers
    reqs.push_back(std::move(r));
  }
  for (const Collected& c : run_all(std::move(reqs))) {
    ASSERT_EQ(c.finish, FinishReason::Stop) << c.text;
    // The markers came as the special tokens (by id).
    for (const char* m : {"<|tool_calls_section_begin|>", "<|tool_call_begin|>", "<|tool_call_end|>"}) {
      const auto id = tiny().tok->token_id(m);
      ASSERT_TRUE(id.has_value());
      EXPECT_NE(std::find(c.tokens.begin(), c.tokens.end(), *id), c.tokens.end()) << m;
    }
    ToolParseResult p = ToolCallParser::parse(c.text);
    ASSERT_EQ(p.calls.size(), 1u) << c.text;
    EXPECT_EQ(p.calls[0].name, "get_weather");
    nlohmann::json args = nlohmann::json::parse(p.calls[0].arguments);
    EXPECT_TRUE(args["city"].is_string());
    EXPECT_TRUE(args["unit"] == "c" || args["unit"] == "f");
    EXPECT_EQ(args.size(), 2u);
  }
}

TEST(EngineConstrained, LogitBiasAllowedIdsBadWordsAndMinTokens) {
  Engine& e = *tiny().engine;
  auto greedy = [&](auto&& tweak) {
    GenerationRequest r;
    r.prompt_tokens = tiny().tok->encode("Once upon a time");
    r.max_tokens = 8;
    r.sampling.temperature = 0.0f;
    r.ignore_eos = true;
    tweak(r);
    return run_one(e, std::move(r));
  };
  const Collected base = greedy([](GenerationRequest&) {});
  ASSERT_EQ(base.tokens.size(), 8u);
  // logit_bias: a large bias makes one token the argmax every step.
  const Collected biased = greedy([](GenerationRequest& r) { r.logit_bias = {{77, 100.0f}}; });
  EXPECT_EQ(biased.tokens, std::vector<int32_t>(8, 77));
  // allowed_token_ids: only those.
  const Collected allowed = greedy([](GenerationRequest& r) { r.allowed_token_ids = {5, 9, 300}; });
  for (int32_t t : allowed.tokens) EXPECT_TRUE(t == 5 || t == 9 || t == 300) << t;
  // bad_words: the greedy first token banned as a word of one token, and a two-token word.
  const int32_t first = base.tokens[0];
  const Collected banned = greedy([&](GenerationRequest& r) { r.bad_words = {{first}}; });
  for (int32_t t : banned.tokens) EXPECT_NE(t, first);
  const Collected banned2 = greedy([&](GenerationRequest& r) { r.bad_words = {{base.tokens[0], base.tokens[1]}}; });
  EXPECT_EQ(banned2.tokens[0], base.tokens[0]);
  EXPECT_NE(banned2.tokens[1], base.tokens[1]);
  // min_tokens: the greedy first token as a stop token ends at once, unless min_tokens holds it back.
  const Collected stop1 = greedy([&](GenerationRequest& r) { r.stop_token_ids = {first}; });
  EXPECT_EQ(stop1.tokens.size(), 1u);
  EXPECT_EQ(stop1.finish, FinishReason::Stop);
  const Collected held = greedy([&](GenerationRequest& r) {
    r.stop_token_ids = {first};
    r.min_tokens = 4;
  });
  ASSERT_GE(held.tokens.size(), 4u);
  for (size_t i = 0; i < 4; ++i) EXPECT_NE(held.tokens[i], first);

  std::string why;
  std::shared_ptr<RequestStream> s;
  GenerationRequest bad;
  bad.prompt_tokens = {1, 2};
  bad.logit_bias = {{1 << 20, 1.0f}};
  EXPECT_EQ(e.submit(bad, &s, &why), SubmitStatus::Invalid);
  bad.logit_bias.clear();
  bad.bad_words = {{}};
  EXPECT_EQ(e.submit(bad, &s, &why), SubmitStatus::Invalid);
  bad.bad_words.clear();
  bad.min_tokens = 100;
  EXPECT_EQ(e.submit(bad, &s, &why), SubmitStatus::Invalid);
}

}  // namespace
