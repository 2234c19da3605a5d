// POST /v1/responses over the fake engine: the request → prompt conversion (instructions, input
// items, tools), the response object, the streamed event sequence, tool calls as function_call
// items, max_output_tokens → incomplete, and the stateless 400s.
#include <gtest/gtest.h>

#include "server_fixture.h"

namespace ds::test {
namespace {

const json kTools = json::array(
    {{{"type", "function"},
      {"name", "get_weather"},
      {"description", "Weather of a city"},
      {"parameters", {{"type", "object"}, {"properties", {{"city", {{"type", "string"}}}}}, {"required", {"city"}}}}}});

// The events of a Responses stream: "event: TYPE\ndata: {...}" blocks; checks that the two agree.
std::vector<json> response_events(const std::string& body) {
  std::vector<json> out;
  size_t pos = 0;
  while (pos < body.size()) {
    size_t end = body.find("\n\n", pos);
    if (end == std::string::npos) end = body.size();
    std::string block = body.substr(pos, end - pos);
    pos = end + 2;
    if (block.empty()) continue;
    size_t nl = block.find('\n');
    EXPECT_EQ(block.rfind("event: ", 0), 0u) << block;
    EXPECT_NE(nl, std::string::npos) << block;
    if (nl == std::string::npos) break;
    std::string type = block.substr(7, nl - 7);
    EXPECT_EQ(block.substr(nl + 1, 6), "data: ") << block;
    json ev = json::parse(block.substr(nl + 7));
    EXPECT_EQ(ev["type"], type);
    out.push_back(std::move(ev));
  }
  return out;
}

TEST(Responses, TextResponse) {
  ServerFixture f;
  f.engine.script = [](const GenerationRequest&) { return std::vector<std::string>{"Hello", " world"}; };
  auto r = f.post("/v1/responses", {{"model", "tiny"}, {"input", "Say hi"}, {"instructions", "Be brief."}});
  ASSERT_EQ(r.status, 200) << r.body;
  auto sub = f.engine.submitted_copy();
  ASSERT_EQ(sub.size(), 1u);
  std::string prompt = f.tok->decode(sub[0].prompt_tokens);
  EXPECT_NE(prompt.find("Be brief."), std::string::npos) << prompt;
  EXPECT_NE(prompt.find("Say hi"), std::string::npos) << prompt;
  EXPECT_LT(prompt.find("Be brief."), prompt.find("Say hi"));
  json j = json::parse(r.body);
  EXPECT_EQ(j["object"], "response");
  EXPECT_EQ(j["id"].get<std::string>().rfind("resp_", 0), 0u);
  EXPECT_EQ(j["status"], "completed");
  EXPECT_EQ(j["model"], "tiny");
  EXPECT_EQ(j["instructions"], "Be brief.");
  EXPECT_TRUE(j["previous_response_id"].is_null());
  ASSERT_EQ(j["output"].size(), 1u);
  const json& msg = j["output"][0];
  EXPECT_EQ(msg["type"], "message");
  EXPECT_EQ(msg["role"], "assistant");
  EXPECT_EQ(msg["status"], "completed");
  EXPECT_EQ(msg["content"][0]["type"], "output_text");
  EXPECT_EQ(msg["content"][0]["text"], "Hello world");
  EXPECT_EQ(j["usage"]["input_tokens"], int(sub[0].prompt_tokens.size()));
  EXPECT_EQ(j["usage"]["output_tokens"], 2);
  EXPECT_EQ(j["usage"]["total_tokens"], int(sub[0].prompt_tokens.size()) + 2);
  EXPECT_EQ(j["usage"]["input_tokens_details"]["cached_tokens"], 0);
}

TEST(Responses, InputItemsBecomeTheConversation) {
  ServerFixture f;
  json input =
      json::array({{{"role", "user"}, {"content", {{{"type", "input_text"}, {"text", "Weather in Paris?"}}}}},
                   {{"type", "function_call"},
                    {"call_id", "functions.get_weather:0"},
                    {"name", "get_weather"},
                    {"arguments", "{\"city\":\"Paris\"}"}},
                   {{"type", "function_call_output"}, {"call_id", "functions.get_weather:0"}, {"output", "Sunny, 21C"}},
                   {{"type", "message"}, {"role", "developer"}, {"content", "Answer in French."}}});
  auto r = f.post("/v1/responses", {{"input", input}, {"tools", kTools}, {"max_output_tokens", 3}});
  ASSERT_EQ(r.status, 200) << r.body;
  auto sub = f.engine.submitted_copy();
  std::string prompt = f.tok->decode(sub[0].prompt_tokens);
  for (const char* part : {"Weather in Paris?", "get_weather", "Sunny, 21C", "Answer in French.", "tool_declare"})
    EXPECT_NE(prompt.find(part), std::string::npos) << part << " in " << prompt;
  EXPECT_EQ(sub[0].max_tokens, 3);
  json j = json::parse(r.body);
  // The fake engine ran into max_output_tokens: an incomplete response.
  EXPECT_EQ(j["status"], "incomplete");
  EXPECT_EQ(j["incomplete_details"]["reason"], "max_output_tokens");
  EXPECT_EQ(j["max_output_tokens"], 3);
  EXPECT_EQ(j["tools"], kTools);
}

TEST(Responses, ToolCallsAreFunctionCallItems) {
  ServerFixture f;
  f.engine.script = [](const GenerationRequest&) { return tool_call_pieces(); };
  auto r = f.post("/v1/responses", {{"input", "Weather in Paris?"}, {"tools", kTools}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_FALSE(f.engine.submitted_copy()[0].skip_special_tokens);
  json out = json::parse(r.body)["output"];
  ASSERT_EQ(out.size(), 2u) << out;
  EXPECT_EQ(out[0]["type"], "message");
  EXPECT_EQ(out[0]["content"][0]["text"], "Let me check.");
  EXPECT_EQ(out[1]["type"], "function_call");
  EXPECT_EQ(out[1]["name"], "get_weather");
  EXPECT_EQ(out[1]["call_id"], "functions.get_weather:0");
  EXPECT_EQ(out[1]["arguments"], "{\"city\": \"Paris\"}");
  EXPECT_EQ(out[1]["status"], "completed");
  EXPECT_EQ(out[1]["id"].get<std::string>().rfind("fc_", 0), 0u);
}

TEST(Responses, StreamedEventSequence) {
  ServerFixture f;
  f.engine.script = [](const GenerationRequest&) { return tool_call_pieces(); };
  auto r = f.post("/v1/responses", {{"input", "Weather?"}, {"tools", kTools}, {"stream", true}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.content_type, "text/event-stream");
  auto ev = response_events(r.body);
  std::vector<std::string> types;
  for (size_t i = 0; i < ev.size(); ++i) {
    EXPECT_EQ(ev[i]["sequence_number"], int(i));
    types.push_back(ev[i]["type"]);
  }
  const std::vector<std::string> expected = {"response.created",
                                             "response.in_progress",
                                             "response.output_item.added",
                                             "response.content_part.added",
                                             "response.output_text.delta",
                                             "response.output_text.delta",
                                             "response.output_text.done",
                                             "response.content_part.done",
                                             "response.output_item.done",
                                             "response.output_item.added",
                                             "response.function_call_arguments.delta",
                                             "response.function_call_arguments.delta",
                                             "response.function_call_arguments.done",
                                             "response.output_item.done",
                                             "response.completed"};
  EXPECT_EQ(types, expected);
  EXPECT_EQ(ev[0]["response"]["status"], "in_progress");
  EXPECT_EQ(ev[4]["delta"], "Let me ");
  EXPECT_EQ(ev[5]["delta"], "check.");
  EXPECT_EQ(ev[4]["item_id"], ev[2]["item"]["id"]);
  EXPECT_EQ(ev[9]["item"]["name"], "get_weather");
  EXPECT_EQ(ev[9]["output_index"], 1);
  EXPECT_EQ(ev[12]["arguments"], "{\"city\": \"Paris\"}");
  const json& done = ev.back()["response"];
  EXPECT_EQ(done["status"], "completed");
  EXPECT_EQ(done["output"].size(), 2u);
  EXPECT_EQ(done["output"][1]["arguments"], "{\"city\": \"Paris\"}");
  EXPECT_EQ(done["id"], ev[0]["response"]["id"]);
  EXPECT_GT(done["usage"]["output_tokens"].get<int>(), 0);
}

TEST(Responses, StreamCutByMaxOutputTokensIsIncomplete) {
  ServerFixture f;
  auto r = f.post("/v1/responses", {{"input", "Hi"}, {"stream", true}, {"max_output_tokens", 4}});
  ASSERT_EQ(r.status, 200) << r.body;
  auto ev = response_events(r.body);
  ASSERT_FALSE(ev.empty());
  EXPECT_EQ(ev.back()["type"], "response.incomplete");
  EXPECT_EQ(ev.back()["response"]["incomplete_details"]["reason"], "max_output_tokens");
  EXPECT_EQ(ev.back()["response"]["usage"]["output_tokens"], 4);
}

TEST(Responses, StatelessAndUnsupportedInputsAre400s) {
  ServerFixture f;
  auto r = f.post("/v1/responses", {{"input", "x"}, {"previous_response_id", "resp_123"}});
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(json::parse(r.body)["error"]["param"], "previous_response_id");
  r = f.post("/v1/responses", {{"input", "x"}, {"tools", {{{"type", "web_search"}}}}});
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(json::parse(r.body)["error"]["param"], "tools[0].type");
  r = f.post("/v1/responses", {{"input", {{{"type", "item_reference"}, {"id", "x"}}}}});
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(json::parse(r.body)["error"]["param"], "input[0].type");
  r = f.post("/v1/responses", {{"input", "x"}, {"text", {{"format", {{"type", "json_schema"}, {"name", "n"}}}}}});
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(json::parse(r.body)["error"]["param"], "text.format.schema");
  r = f.post("/v1/responses", json{{"model", "tiny"}});
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(json::parse(r.body)["error"]["param"], "input");
  EXPECT_TRUE(f.engine.submitted_copy().empty());
}

}  // namespace
}  // namespace ds::test
