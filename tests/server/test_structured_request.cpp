// Parsing of the output-constraint and token-control fields (response_format, structured_outputs,
// guided_*, tool_choice forcing, logit_bias, min_tokens, allowed_token_ids, bad_words): what the
// grammar engine gets, and 400s naming the field.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <optional>

#include "engine/engine.h"
#include "server/api_error.h"
#include "server/openai_request.h"
#include "server/responses_request.h"
#include "tokenizer/tokenizer.h"

namespace ds::server {
namespace {

using nlohmann::json;
using Kind = OutputConstraint::Kind;

const json kMsgs = json::array({{{"role", "user"}, {"content", "hi"}}});
constexpr int kVocab = 2048;

json chat(json extra) {
  json b = {{"messages", kMsgs}};
  b.update(extra);
  return b;
}

// The param of the 400 a body gets ("" when it parses).
std::string error_param(const json& body) {
  try {
    parse_chat_request(body, kVocab);
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status, 400) << e.what();
    return e.param.empty() ? "(none)" : e.param;
  }
  return "";
}

const json kSchema = {{"type", "object"},
                      {"properties", {{"b", {{"type", "integer"}}}, {"a", {{"type", "string"}}}}},
                      {"required", {"a"}}};

TEST(StructuredRequest, ResponseFormats) {
  auto c = parse_chat_request(chat({{"response_format", {{"type", "text"}}}}), kVocab).opt.constraint;
  EXPECT_FALSE(c.active());
  c = parse_chat_request(chat({{"response_format", {{"type", "json_object"}}}}), kVocab).opt.constraint;
  EXPECT_EQ(c.kind, Kind::JsonObject);
  EXPECT_EQ(c.field, "response_format");
  c = parse_chat_request(
          chat({{"response_format",
                 {{"type", "json_schema"}, {"json_schema", {{"name", "x"}, {"schema", kSchema}, {"strict", true}}}}}}),
          kVocab)
          .opt.constraint;
  EXPECT_EQ(c.kind, Kind::JsonSchema);
  EXPECT_EQ(c.schema, kSchema);
  EXPECT_EQ(c.schema_at, "/response_format/json_schema/schema");
  EXPECT_TRUE(c.strict);
}

TEST(StructuredRequest, VllmFields) {
  auto c = parse_chat_request(chat({{"guided_json", kSchema.dump()}}), kVocab).opt.constraint;  // JSON text
  EXPECT_EQ(c.kind, Kind::JsonSchema);
  EXPECT_EQ(c.schema, kSchema);
  EXPECT_EQ(c.schema_at, "/guided_json");
  c = parse_chat_request(chat({{"guided_regex", "[a-z]+"}}), kVocab).opt.constraint;
  EXPECT_EQ(c.kind, Kind::Regex);
  EXPECT_EQ(c.text, "[a-z]+");
  c = parse_chat_request(chat({{"guided_choice", {"yes", "no"}}}), kVocab).opt.constraint;
  EXPECT_EQ(c.kind, Kind::Choice);
  EXPECT_EQ(c.choices, (std::vector<std::string>{"yes", "no"}));
  c = parse_chat_request(chat({{"guided_grammar", "root ::= \"a\""}}), kVocab).opt.constraint;
  EXPECT_EQ(c.kind, Kind::Grammar);
  c = parse_chat_request(chat({{"structured_outputs", {{"choice", {"x"}}}}}), kVocab).opt.constraint;
  EXPECT_EQ(c.kind, Kind::Choice);
  EXPECT_EQ(c.field, "structured_outputs.choice");
  c = parse_chat_request(chat({{"structured_outputs", {{"json", kSchema}}}}), kVocab).opt.constraint;
  EXPECT_EQ(c.schema_at, "/structured_outputs/json");
  c = parse_chat_request(chat({{"structured_outputs", {{"json_object", true}}}}), kVocab).opt.constraint;
  EXPECT_EQ(c.kind, Kind::JsonObject);
  // The completions endpoint takes the same fields.
  auto cr = parse_completion_request({{"prompt", "x"}, {"guided_regex", "a|b"}}, kVocab);
  EXPECT_EQ(cr.opt.constraint.kind, Kind::Regex);
}

TEST(StructuredRequest, BadConstraintsNameTheField) {
  EXPECT_EQ(error_param(chat({{"response_format", {{"type", "xml"}}}})), "response_format.type");
  EXPECT_EQ(error_param(chat({{"response_format", {{"type", "json_schema"}}}})), "response_format.json_schema");
  EXPECT_EQ(error_param(chat({{"response_format", {{"type", "json_schema"}, {"json_schema", {{"schema", 5}}}}}})),
            "response_format.json_schema.schema");
  EXPECT_EQ(error_param(chat({{"guided_json", "{not json"}})), "guided_json");
  EXPECT_EQ(error_param(chat({{"guided_regex", 5}})), "guided_regex");
  EXPECT_EQ(error_param(chat({{"guided_choice", json::array()}})), "guided_choice");
  EXPECT_EQ(error_param(chat({{"guided_choice", {"a", 1}}})), "guided_choice");
  EXPECT_EQ(error_param(chat({{"structured_outputs", {{"regex", "a"}, {"choice", {"b"}}}}})),
            "structured_outputs.choice");
  EXPECT_EQ(error_param(chat({{"structured_outputs", {{"structural_tag", "{}"}}}})),
            "structured_outputs.structural_tag");
  // Two sources at once.
  EXPECT_EQ(error_param(chat({{"response_format", {{"type", "json_object"}}}, {"guided_regex", "a"}})), "guided_regex");
}

const json kTools = json::array({{{"type", "function"}, {"function", {{"name", "f"}, {"parameters", kSchema}}}},
                                 {{"type", "function"}, {"function", {{"name", "g"}}}}});

TEST(StructuredRequest, ForcedToolCalls) {
  auto c = parse_chat_request(chat({{"tools", kTools}, {"tool_choice", "required"}}), kVocab).opt.constraint;
  EXPECT_EQ(c.kind, Kind::ToolCall);
  EXPECT_EQ(c.tool_name, "");
  ASSERT_EQ(c.tools.size(), 2u);
  EXPECT_EQ(c.tools[0].name, "f");
  EXPECT_EQ(c.tools[0].parameters, kSchema);
  EXPECT_EQ(c.tools[0].parameters_at, "/tools/0/function/parameters");
  EXPECT_EQ(c.tools[1].parameters_at, "");
  EXPECT_TRUE(c.parallel_tool_calls);
  c = parse_chat_request(chat({{"tools", kTools},
                               {"tool_choice", {{"type", "function"}, {"function", {{"name", "g"}}}}},
                               {"parallel_tool_calls", false}}),
                         kVocab)
          .opt.constraint;
  EXPECT_EQ(c.kind, Kind::ToolCall);
  EXPECT_EQ(c.tool_name, "g");
  EXPECT_FALSE(c.parallel_tool_calls);
  EXPECT_EQ(parse_chat_request(chat({{"tools", kTools}, {"tool_choice", "any"}}), kVocab).opt.constraint.kind,
            Kind::ToolCall);
  for (const char* none : {"auto", "none"})
    EXPECT_FALSE(parse_chat_request(chat({{"tools", kTools}, {"tool_choice", none}}), kVocab).opt.constraint.active());
  EXPECT_EQ(
      error_param(chat({{"tools", kTools}, {"tool_choice", {{"type", "function"}, {"function", {{"name", "nope"}}}}}})),
      "tool_choice");
  EXPECT_EQ(error_param(chat({{"tools", kTools}, {"tool_choice", "required"}, {"guided_regex", "a"}})), "tool_choice");
}

TEST(StructuredRequest, TokenControls) {
  auto t = parse_chat_request(chat({{"logit_bias", {{"5", 10}, {"7", -100}}},
                                    {"min_tokens", 3},
                                    {"allowed_token_ids", {1, 2, 3}},
                                    {"bad_words", {"foo", "bar baz"}}}),
                              kVocab)
               .opt.tokens;
  EXPECT_EQ(t.logit_bias, (std::vector<std::pair<int32_t, float>>{{5, 10.0f}, {7, -100.0f}}));
  EXPECT_EQ(t.min_tokens, 3);
  EXPECT_EQ(t.allowed_token_ids, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(t.bad_words, (std::vector<std::string>{"foo", "bar baz"}));
  EXPECT_TRUE(t.active());
  EXPECT_FALSE(parse_chat_request(chat({{"logit_bias", json::object()}}), kVocab).opt.tokens.active());

  EXPECT_EQ(error_param(chat({{"logit_bias", {{"99999", 1}}}})), "logit_bias.99999");
  EXPECT_EQ(error_param(chat({{"logit_bias", {{"-1", 1}}}})), "logit_bias.-1");
  EXPECT_EQ(error_param(chat({{"logit_bias", {{"5", "x"}}}})), "logit_bias.5");
  EXPECT_EQ(error_param(chat({{"logit_bias", {1, 2}}})), "logit_bias");
  EXPECT_EQ(error_param(chat({{"min_tokens", -1}})), "min_tokens");
  EXPECT_EQ(error_param(chat({{"allowed_token_ids", {1, kVocab}}})), "allowed_token_ids");
  EXPECT_EQ(error_param(chat({{"allowed_token_ids", json::array()}})), "allowed_token_ids");
  EXPECT_EQ(error_param(chat({{"bad_words", {""}}})), "bad_words[0]");
  EXPECT_EQ(error_param(chat({{"prompt_logprobs", 21}})), "prompt_logprobs");  // above --max-logprobs (20)
}

TEST(StructuredRequest, ResponsesApiFields) {
  json tools = json::array({{{"type", "function"}, {"name", "f"}, {"parameters", kSchema}, {"strict", true}}});
  auto req = parse_responses_request(
      {{"input", "x"},
       {"text", {{"format", {{"type", "json_schema"}, {"name", "n"}, {"schema", kSchema}, {"strict", true}}}}}},
      kVocab);
  const auto& c = req.chat.opt.constraint;
  EXPECT_EQ(c.kind, Kind::JsonSchema);
  EXPECT_EQ(c.field, "text.format");
  EXPECT_EQ(c.schema, kSchema);
  EXPECT_EQ(c.schema_at, "/text/format/schema");
  EXPECT_EQ(parse_responses_request({{"input", "x"}, {"text", {{"format", {{"type", "json_object"}}}}}}, kVocab)
                .chat.opt.constraint.kind,
            Kind::JsonObject);
  auto forced = parse_responses_request(
      {{"input", "x"}, {"tools", tools}, {"tool_choice", {{"type", "function"}, {"name", "f"}}}}, kVocab);
  const auto& t = forced.chat.opt.constraint;
  EXPECT_EQ(t.kind, Kind::ToolCall);
  EXPECT_EQ(t.tool_name, "f");
  ASSERT_EQ(t.tools.size(), 1u);
  EXPECT_EQ(t.tools[0].parameters_at, "/tools/0/parameters");
  EXPECT_EQ(parse_responses_request({{"input", "x"}, {"tools", tools}, {"tool_choice", "required"}}, kVocab)
                .chat.opt.constraint.kind,
            Kind::ToolCall);
  auto r = parse_responses_request({{"input", "x"}, {"max_output_tokens", 7}, {"temperature", 0}}, kVocab);
  EXPECT_EQ(r.chat.opt.max_tokens, 7);
  EXPECT_EQ(r.chat.opt.sampling.temperature, 0.0f);
}

// Compiles what a body asks for; the ApiError when it throws one.
std::optional<ApiError> compile_error(const json& body) {
  auto req = parse_chat_request(body, kVocab);
  try {
    compile_output_constraint(req.opt.constraint, body.dump());
  } catch (const ApiError& e) {
    return e;
  }
  return std::nullopt;
}

TEST(StructuredRequest, ConstraintsCompileOrAre400sNamingTheField) {
  auto req = parse_chat_request(chat(json::object()), kVocab);
  EXPECT_EQ(compile_output_constraint(req.opt.constraint, "{}"), nullptr);
  for (const json& ok : {chat({{"response_format", {{"type", "json_schema"}, {"json_schema", {{"schema", kSchema}}}}}}),
                         chat({{"guided_json", kSchema.dump()}}), chat({{"guided_regex", "[a-z]{2,4}"}}),
                         chat({{"structured_outputs", {{"grammar", "root ::= \"a\" | \"b\""}}}}),
                         chat({{"tools", kTools}, {"tool_choice", "required"}})}) {
    auto r = parse_chat_request(ok, kVocab);
    EXPECT_NE(compile_output_constraint(r.opt.constraint, ok.dump()), nullptr) << ok.dump();
  }
  auto e = compile_error(
      chat({{"response_format",
             {{"type", "json_schema"},
              {"json_schema", {{"schema", {{"type", "object"}, {"patternProperties", json::object()}}}}}}}}));
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status, 400);
  EXPECT_EQ(e->param, "response_format");
  EXPECT_NE(std::string(e->what()).find("patternProperties"), std::string::npos) << e->what();
  e = compile_error(chat({{"guided_regex", "(unclosed"}}));
  ASSERT_TRUE(e);
  EXPECT_EQ(e->param, "guided_regex");
  e = compile_error(chat({{"structured_outputs", {{"grammar", "root ::= \"a"}}}}));
  ASSERT_TRUE(e);
  EXPECT_EQ(e->param, "structured_outputs.grammar");
  json bad_tool = kTools;
  bad_tool[0]["function"]["parameters"]["patternProperties"] = json::object();
  e = compile_error(chat({{"tools", bad_tool}, {"tool_choice", "required"}}));
  ASSERT_TRUE(e);
  EXPECT_EQ(e->param, "tool_choice");
}

TEST(StructuredRequest, TokenControlsReachTheEngineRequest) {
  auto tok = Tokenizer::from_dir(DS_FIXTURES_DIR "/tiny/tokenizer");
  TokenControls t;
  t.logit_bias = {{5, 2.5f}};
  t.allowed_token_ids = {7, 8};
  t.min_tokens = 3;
  t.bad_words = {"hello"};
  GenerationRequest r;
  r.max_tokens = 10;
  apply_token_controls(t, *tok, &r);
  EXPECT_EQ(r.logit_bias, t.logit_bias);
  EXPECT_EQ(r.allowed_token_ids, t.allowed_token_ids);
  EXPECT_EQ(r.min_tokens, 3);
  // The word as written and after a space (vLLM's rule), as plain text.
  ASSERT_EQ(r.bad_words.size(), 2u);
  EXPECT_EQ(r.bad_words[0], tok->encode("hello", false));
  EXPECT_EQ(r.bad_words[1], tok->encode(" hello", false));
  r.max_tokens = 2;
  try {
    apply_token_controls(t, *tok, &r);
    FAIL() << "min_tokens beyond max_tokens was accepted";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.param, "min_tokens");
  }
}

}  // namespace
}  // namespace ds::server
