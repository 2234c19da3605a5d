// Behaviour matched to vLLM after a user audit: CORS preflights (all methods by default, DELETE included;
// --allowed-methods / --allowed-headers / --allow-credentials), X-Request-Id headers, the API key on /v1 only,
// error params in each endpoint's own field names, the Responses API's incomplete item status and echoed
// `user`, seed and prompt-list validation, --max-logprobs, --response-role, --enable-force-include-usage and
// --chat-template-content-format string.
#include <gtest/gtest.h>

#include <cctype>

#include "server_fixture.h"

namespace ds::test {
namespace {

const json kMsgs = json::array({{{"role", "user"}, {"content", "hi"}}});

Reply preflight(HttpClient& c, const std::string& method, const std::string& headers = "") {
  std::vector<std::pair<std::string, std::string>> h = {{"Origin", "https://app.example"},
                                                        {"Access-Control-Request-Method", method}};
  if (!headers.empty()) h.emplace_back("Access-Control-Request-Headers", headers);
  return c.request(http::verb::options, "/v1/responses/resp_1", {}, h);
}

std::string param_of(const Reply& r) {
  json j = json::parse(r.body, nullptr, false);
  return j.is_object() && j.contains("error") && j["error"]["param"].is_string() ? j["error"]["param"].get<std::string>()
                                                                                  : "";
}

TEST(VllmParity, CorsPreflightAllowsEveryMethodByDefault) {
  ServerFixture f;
  auto c = f.client();
  auto r = preflight(c, "DELETE", "authorization, x-custom");
  EXPECT_EQ(r.status, 200) << r.body;
  const std::string methods = r.header("Access-Control-Allow-Methods");
  for (const char* m : {"DELETE", "GET", "POST", "OPTIONS"}) EXPECT_NE(methods.find(m), std::string::npos) << methods;
  EXPECT_EQ(r.header("Access-Control-Allow-Headers"), "authorization, x-custom");
  EXPECT_EQ(r.header("Access-Control-Allow-Origin"), "*");
  EXPECT_EQ(r.header("Access-Control-Allow-Credentials"), "");
}

TEST(VllmParity, CorsMethodHeaderListsAndCredentials) {
  ServerFixture f("", 1u << 20, 256, false, [](server::ServerOptions& o) {
    o.allowed_methods = {"GET", "POST"};
    o.allowed_headers = {"Authorization"};
    o.allow_credentials = true;
  });
  auto c = f.client();
  auto r = preflight(c, "DELETE");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.body, "Disallowed CORS method");
  r = preflight(c, "POST", "authorization, x-custom");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.body, "Disallowed CORS headers");
  r = preflight(c, "POST", "Authorization, content-type");  // content-type: on the CORS safelist
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("Access-Control-Allow-Methods"), "GET, POST");
  // Credentials: the origin is named (browsers refuse "*" with credentials), on preflights and responses.
  EXPECT_EQ(r.header("Access-Control-Allow-Origin"), "https://app.example");
  EXPECT_EQ(r.header("Access-Control-Allow-Credentials"), "true");
  r = c.get("/v1/models", {{"Origin", "https://app.example"}});
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("Access-Control-Allow-Origin"), "https://app.example");
  EXPECT_EQ(r.header("Access-Control-Allow-Credentials"), "true");
}

TEST(VllmParity, RequestIdHeaders) {
  ServerFixture off;
  EXPECT_EQ(off.client().get("/v1/models", {{"X-Request-Id", "abc"}}).header("X-Request-Id"), "");
  ServerFixture f("sekret", 1u << 20, 256, false, [](server::ServerOptions& o) { o.request_id_headers = true; });
  auto c = f.client();
  auto r = c.get("/v1/models", {{"X-Request-Id", "my-id-1"}, {"Authorization", "Bearer sekret"}});
  EXPECT_EQ(r.header("X-Request-Id"), "my-id-1");
  r = c.get("/v1/models");  // errors carry it too
  EXPECT_EQ(r.status, 401);
  const std::string id = r.header("X-Request-Id");
  ASSERT_EQ(id.size(), 32u) << id;
  for (char ch : id) EXPECT_TRUE(std::isxdigit((unsigned char)ch)) << id;
  EXPECT_NE(c.get("/health").header("X-Request-Id"), id);  // a new one each time
}

TEST(VllmParity, ApiKeyGuardsOnlyTheV1Paths) {
  ServerFixture f("sekret");
  auto c = f.client();
  EXPECT_EQ(c.post("/tokenize", json{{"prompt", "hello"}}.dump()).status, 200);
  EXPECT_EQ(c.post("/detokenize", json{{"tokens", {1, 2}}}.dump()).status, 200);
  EXPECT_EQ(c.get("/nope").status, 404);
  EXPECT_EQ(c.get("/v1/models").status, 401);
  EXPECT_EQ(c.get("/v1/nope").status, 401);  // vLLM: every path under /v1
  EXPECT_EQ(c.post("/v1/completions", json{{"prompt", "x"}}.dump()).status, 401);
}

TEST(VllmParity, ErrorParamsUseTheEndpointsFieldNames) {
  ServerFixture f("", 1u << 20, 64);
  std::string long_text;
  for (int i = 0; i < 200; ++i) long_text += "word ";
  EXPECT_EQ(param_of(f.post("/v1/chat/completions",
                            {{"messages", {{{"role", "user"}, {"content", long_text}}}}, {"max_tokens", 1}})),
            "messages");
  EXPECT_EQ(param_of(f.post("/v1/responses", {{"input", long_text}})), "input");
  EXPECT_EQ(param_of(f.post("/v1/completions", {{"prompt", long_text}})), "prompt");
  // A length beyond the context names the field the client sent.
  EXPECT_EQ(param_of(f.post("/v1/chat/completions", {{"messages", kMsgs}, {"max_tokens", 1000}})), "max_tokens");
  EXPECT_EQ(param_of(f.post("/v1/chat/completions", {{"messages", kMsgs}, {"max_completion_tokens", 1000}})),
            "max_completion_tokens");
  EXPECT_EQ(param_of(f.post("/v1/responses", {{"input", "hi"}, {"max_output_tokens", 1000}})), "max_output_tokens");
  for (int bad : {0, -3}) {
    auto r = f.post("/v1/responses", {{"input", "hi"}, {"max_output_tokens", bad}});
    EXPECT_EQ(r.status, 400) << bad;
    EXPECT_EQ(param_of(r), "max_output_tokens") << r.body;
  }
  EXPECT_TRUE(f.engine.submitted_copy().empty());
}

TEST(VllmParity, IncompleteResponseItemAndUser) {
  ServerFixture f;
  auto r = f.post("/v1/responses", {{"input", "Hi"}, {"max_output_tokens", 3}, {"user", "user-42"}});
  ASSERT_EQ(r.status, 200) << r.body;
  json j = json::parse(r.body);
  EXPECT_EQ(j["status"], "incomplete");
  ASSERT_EQ(j["output"].size(), 1u);
  EXPECT_EQ(j["output"][0]["status"], "incomplete");
  EXPECT_EQ(j["user"], "user-42");
  r = f.post("/v1/responses", {{"input", "Hi"}, {"max_output_tokens", 3}, {"stream", true}});
  ASSERT_EQ(r.status, 200) << r.body;
  const size_t last = r.body.rfind("event: response.incomplete");
  ASSERT_NE(last, std::string::npos) << r.body;
  json done = json::parse(r.body.substr(r.body.find("data: ", last) + 6));
  EXPECT_EQ(done["response"]["output"][0]["status"], "incomplete");
  EXPECT_TRUE(done["response"]["user"].is_null());
  const size_t item_done = r.body.rfind("event: response.output_item.done");
  ASSERT_NE(item_done, std::string::npos);
  EXPECT_EQ(json::parse(r.body.substr(r.body.find("data: ", item_done) + 6,
                                      r.body.find("\n\n", item_done) - r.body.find("data: ", item_done) - 6))["item"]["status"],
            "incomplete");
  // Finished by a stop: completed, as before.
  f.engine.script = [](const GenerationRequest&) { return std::vector<std::string>{"Hello"}; };
  j = json::parse(f.post("/v1/responses", {{"input", "Hi"}}).body);
  EXPECT_EQ(j["output"][0]["status"], "completed");
}

TEST(VllmParity, SeedAndPromptListsAreValidated) {
  ServerFixture f;
  // Above int64's maximum: a 400 naming seed (it used to be clamped and accepted).
  auto r = f.client().post("/v1/completions", R"({"prompt": "x", "max_tokens": 1, "seed": 18446744073709551615})");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(param_of(r), "seed");
  r = f.client().post("/v1/chat/completions",
                      R"({"messages": [{"role": "user", "content": "x"}], "max_tokens": 1, "seed": 9223372036854775808})");
  EXPECT_EQ(r.status, 400) << r.body;
  for (const char* ok : {"9223372036854775807", "-9223372036854775808", "0"}) {
    r = f.client().post("/v1/completions", std::string(R"({"prompt": "x", "max_tokens": 1, "seed": )") + ok + "}");
    EXPECT_EQ(r.status, 200) << ok << " " << r.body;
  }
  // A prompt list mixing strings and token-id lists.
  for (const json& mixed : {json::array({"abc", {1, 2}}), json::array({{1, 2}, "abc"})}) {
    r = f.post("/v1/completions", {{"prompt", mixed}, {"max_tokens", 1}});
    EXPECT_EQ(r.status, 400) << mixed.dump();
    EXPECT_EQ(param_of(r), "prompt");
  }
  EXPECT_EQ(f.post("/v1/completions", {{"prompt", {"abc", "de"}}, {"max_tokens", 1}}).status, 200);
  EXPECT_EQ(f.post("/v1/completions", {{"prompt", {{1, 2}, {3}}}, {"max_tokens", 1}}).status, 200);
}

TEST(VllmParity, MaxLogprobsCapsRequests) {
  ServerFixture f("", 1u << 20, 256, false, [](server::ServerOptions& o) { o.sampling_defaults.max_logprobs = 5; });
  EXPECT_EQ(f.post("/v1/completions", {{"prompt", "x"}, {"max_tokens", 1}, {"logprobs", 5}}).status, 200);
  auto r = f.post("/v1/completions", {{"prompt", "x"}, {"max_tokens", 1}, {"logprobs", 6}});
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(param_of(r), "logprobs");
  r = f.post("/v1/chat/completions", {{"messages", kMsgs}, {"max_tokens", 1}, {"logprobs", true}, {"top_logprobs", 6}});
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(param_of(r), "top_logprobs");
  ServerFixture dflt;  // vLLM's default cap: 20
  EXPECT_EQ(dflt.post("/v1/completions", {{"prompt", "x"}, {"max_tokens", 1}, {"logprobs", 20}}).status, 200);
  EXPECT_EQ(dflt.post("/v1/completions", {{"prompt", "x"}, {"max_tokens", 1}, {"logprobs", 21}}).status, 400);
}

TEST(VllmParity, ResponseRoleAndForcedUsage) {
  ServerFixture f("", 1u << 20, 256, false, [](server::ServerOptions& o) {
    o.response_role = "bot";
    o.force_include_usage = true;
  });
  json j = json::parse(f.post("/v1/chat/completions", {{"messages", kMsgs}, {"max_tokens", 2}}).body);
  EXPECT_EQ(j["choices"][0]["message"]["role"], "bot");
  // Without a generation prompt the reply continues the last message, whose role it takes (vLLM).
  j = json::parse(
      f.post("/v1/chat/completions", {{"messages", kMsgs}, {"max_tokens", 2}, {"add_generation_prompt", false}}).body);
  EXPECT_EQ(j["choices"][0]["message"]["role"], "user");
  for (const char* path : {"/v1/chat/completions", "/v1/completions"}) {
    json body = {{"max_tokens", 2}, {"stream", true}};
    if (std::string(path) == "/v1/completions") body["prompt"] = "hi";
    else body["messages"] = kMsgs;
    auto events = sse_events(f.post(path, body).body);
    ASSERT_GE(events.size(), 3u) << path;
    EXPECT_EQ(events.back(), "[DONE]");
    const json& usage_chunk = events[events.size() - 2];
    EXPECT_TRUE(usage_chunk["choices"].empty()) << path;
    EXPECT_EQ(usage_chunk["usage"]["completion_tokens"], 2) << path;
    if (std::string(path) == "/v1/chat/completions") {
      EXPECT_EQ(events[0]["choices"][0]["delta"]["role"], "bot");
    }
  }
}

TEST(VllmParity, ChatTemplateContentFormatString) {
  const json msgs = json::array(
      {{{"role", "user"}, {"content", {{{"type", "text"}, {"text", "first"}}, {{"type", "text"}, {"text", "second"}}}}}});
  const json joined = json::array({{{"role", "user"}, {"content", "first\nsecond"}}});
  ServerFixture openai;
  ServerFixture string_form("", 1u << 20, 256, false,
                            [](server::ServerOptions& o) { o.content_parts_as_string = true; });
  for (ServerFixture* f : {&openai, &string_form}) {
    ASSERT_EQ(f->post("/v1/chat/completions", {{"messages", msgs}, {"max_tokens", 1}}).status, 200);
    ASSERT_EQ(f->post("/v1/chat/completions", {{"messages", joined}, {"max_tokens", 1}}).status, 200);
  }
  auto a = openai.engine.submitted_copy(), b = string_form.engine.submitted_copy();
  ASSERT_EQ(a.size(), 2u);
  ASSERT_EQ(b.size(), 2u);
  EXPECT_NE(a[0].prompt_tokens, a[1].prompt_tokens);  // the template concatenates the parts: "firstsecond"
  EXPECT_EQ(b[0].prompt_tokens, b[1].prompt_tokens);  // joined by a newline first, as vLLM's string form
  EXPECT_EQ(b[1].prompt_tokens, a[1].prompt_tokens);
  // /tokenize's chat form renders the same way.
  auto t = string_form.post("/tokenize", {{"messages", msgs}});
  ASSERT_EQ(t.status, 200) << t.body;
  EXPECT_EQ(json::parse(t.body)["tokens"].get<std::vector<int32_t>>(), b[1].prompt_tokens);
}

}  // namespace
}  // namespace ds::test
