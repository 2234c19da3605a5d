// POST /v1/responses over the fake engine: the request → prompt conversion (instructions, input
// items, tools), the response object, the streamed event sequence, tool calls as function_call
// items, max_output_tokens → incomplete, the unsupported inputs' errors, and the response store
// (previous_response_id, GET / DELETE /v1/responses/{id}, store: false, the store's budget).
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

TEST(Responses, UnknownPreviousResponsesAndUnsupportedInputsAreErrors) {
  ServerFixture f;
  auto r = f.post("/v1/responses", {{"input", "x"}, {"previous_response_id", "resp_123"}});
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(json::parse(r.body)["error"]["param"], "previous_response_id");
  EXPECT_NE(json::parse(r.body)["error"]["message"].get<std::string>().find("resp_123"), std::string::npos);
  r = f.post("/v1/responses", {{"input", "x"}, {"previous_response_id", 7}});
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(json::parse(r.body)["error"]["param"], "previous_response_id");
  r = f.post("/v1/responses", {{"input", "x"}, {"conversation", "conv_1"}});
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(json::parse(r.body)["error"]["param"], "conversation");
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

// A conversation continued by previous_response_id: the new prompt holds the first turn's input and
// answer (not its instructions), then the new input; and the chain goes on from the second response.
TEST(Responses, PreviousResponseIdContinuesTheConversation) {
  ServerFixture f;
  int turn = 0;
  f.engine.script = [&turn](const GenerationRequest&) {
    return std::vector<std::string>{turn++ == 0 ? "Paris is sunny." : "Yes, 21C."};
  };
  auto r1 = f.post("/v1/responses", {{"input", "Weather in Paris?"}, {"instructions", "Be brief."}});
  ASSERT_EQ(r1.status, 200) << r1.body;
  const json j1 = json::parse(r1.body);
  EXPECT_EQ(j1["store"], true);
  const std::string id1 = j1["id"];
  auto r2 = f.post("/v1/responses", {{"input", "Warm?"}, {"previous_response_id", id1}, {"instructions", "Use French."}});
  ASSERT_EQ(r2.status, 200) << r2.body;
  const json j2 = json::parse(r2.body);
  EXPECT_EQ(j2["previous_response_id"], id1);
  auto sub = f.engine.submitted_copy();
  ASSERT_EQ(sub.size(), 2u);
  const std::string p2 = f.tok->decode(sub[1].prompt_tokens);
  for (const char* part : {"Use French.", "Weather in Paris?", "Paris is sunny.", "Warm?"})
    EXPECT_NE(p2.find(part), std::string::npos) << part << " in " << p2;
  EXPECT_EQ(p2.find("Be brief."), std::string::npos) << "the first request's instructions are not carried over";
  EXPECT_LT(p2.find("Weather in Paris?"), p2.find("Paris is sunny."));
  EXPECT_LT(p2.find("Paris is sunny."), p2.find("Warm?"));
  EXPECT_GT(sub[1].prompt_tokens.size(), sub[0].prompt_tokens.size());

  // the third turn, streamed, continues the second (and so the first)
  auto r3 = f.client().post("/v1/responses", json{{"input", "Thanks"}, {"previous_response_id", j2["id"]},
                                                   {"stream", true}}.dump());
  ASSERT_EQ(r3.status, 200) << r3.body;
  const std::string p3 = f.tok->decode(f.engine.submitted_copy()[2].prompt_tokens);
  for (const char* part : {"Weather in Paris?", "Paris is sunny.", "Warm?", "Yes, 21C.", "Thanks"})
    EXPECT_NE(p3.find(part), std::string::npos) << part << " in " << p3;
  auto ev = response_events(r3.body);
  ASSERT_FALSE(ev.empty());
  EXPECT_EQ(ev.back()["type"], "response.completed");
  const std::string id3 = ev.back()["response"]["id"];

  // GET returns the stored object; DELETE drops it, after which both are 404s
  auto g = f.client().get("/v1/responses/" + id3);
  ASSERT_EQ(g.status, 200) << g.body;
  EXPECT_EQ(json::parse(g.body), ev.back()["response"]);
  auto d = f.client().request(http::verb::delete_, "/v1/responses/" + id3, "");
  ASSERT_EQ(d.status, 200) << d.body;
  EXPECT_EQ(json::parse(d.body), (json{{"id", id3}, {"object", "response"}, {"deleted", true}}));
  EXPECT_EQ(f.client().get("/v1/responses/" + id3).status, 404);
  EXPECT_EQ(f.client().request(http::verb::delete_, "/v1/responses/" + id3, "").status, 404);
  EXPECT_EQ(f.post("/v1/responses", {{"input", "x"}, {"previous_response_id", id3}}).status, 404);
  EXPECT_EQ(f.client().request(http::verb::put, "/v1/responses/" + id1, "").status, 405);
}

// store: false keeps nothing; a server without a store (--responses-store-mib 0) says why it cannot
// continue a conversation.
TEST(Responses, StoreFalseAndAServerWithoutAStore) {
  ServerFixture f;
  auto r = f.post("/v1/responses", {{"input", "x"}, {"store", false}});
  ASSERT_EQ(r.status, 200) << r.body;
  const json j = json::parse(r.body);
  EXPECT_EQ(j["store"], false);
  EXPECT_EQ(f.client().get("/v1/responses/" + j["id"].get<std::string>()).status, 404);
  EXPECT_EQ(f.post("/v1/responses", {{"input", "y"}, {"previous_response_id", j["id"]}}).status, 404);

  ServerFixture off("", 1u << 20, 256, false, [](server::ServerOptions& o) { o.responses_store_bytes = 0; });
  r = off.post("/v1/responses", {{"input", "x"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body)["store"], false);
  r = off.post("/v1/responses", {{"input", "x"}, {"previous_response_id", json::parse(r.body)["id"]}});
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(json::parse(r.body)["error"]["message"].get<std::string>().find("--responses-store-mib"), std::string::npos);
}

TEST(ResponseStore, KeepsTheMostRecentlyUsedWithinItsBudget) {
  server::ResponseStore s(3000);
  auto entry = [](int n) {
    return server::ResponseStore::Entry{json::array({std::string(size_t(n), 'x')}), json::object()};
  };
  EXPECT_TRUE(s.put("a", entry(800)));
  EXPECT_TRUE(s.put("b", entry(800)));
  EXPECT_TRUE(s.put("c", entry(800)));
  EXPECT_EQ(s.size(), 3u);
  EXPECT_NE(s.get("a"), nullptr);  // a is now the most recently used: b goes first
  EXPECT_TRUE(s.put("d", entry(800)));
  EXPECT_EQ(s.get("b"), nullptr);
  EXPECT_NE(s.get("a"), nullptr);
  EXPECT_NE(s.get("c"), nullptr);
  EXPECT_NE(s.get("d"), nullptr);
  EXPECT_LE(s.bytes(), 3000u);
  EXPECT_FALSE(s.put("huge", entry(5000)));  // larger than the whole budget: not kept, nothing dropped
  EXPECT_EQ(s.size(), 3u);
  EXPECT_TRUE(s.put("c", entry(10)));  // replacing frees the old entry's bytes
  EXPECT_EQ(s.size(), 3u);
  const server::ResponseStore::EntryPtr held = s.get("c");
  EXPECT_TRUE(s.erase("c"));
  ASSERT_NE(held, nullptr);  // a reader's entry stays valid after it is dropped
  EXPECT_EQ(held->items, json::array({std::string(10, 'x')}));
  EXPECT_FALSE(s.erase("c"));
  EXPECT_EQ(s.size(), 2u);
  EXPECT_FALSE(server::ResponseStore(0).enabled());
}

}  // namespace
}  // namespace ds::test
