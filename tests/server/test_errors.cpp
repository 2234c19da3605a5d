// Bad requests get the right status and OpenAI's error object; the server keeps serving.
#include <gtest/gtest.h>

#include <thread>

#include "server_fixture.h"

namespace ds::test {
namespace {

const json kMsgs = json::array({{{"role", "user"}, {"content", "hi"}}});

struct Case {
  const char* name;
  const char* path;
  std::string body;
  int status;
  const char* param;  // expected error.param ("" : any)
};

void expect_error(const Reply& r, int status, const std::string& param, const std::string& what) {
  EXPECT_EQ(r.status, status) << what << ": " << r.body;
  json j = json::parse(r.body, nullptr, false);
  ASSERT_TRUE(j.is_object() && j.contains("error")) << what << ": " << r.body;
  EXPECT_TRUE(j["error"]["message"].is_string()) << what;
  EXPECT_FALSE(j["error"]["message"].get<std::string>().empty()) << what;
  EXPECT_TRUE(j["error"]["type"].is_string()) << what;
  EXPECT_TRUE(j["error"].contains("code")) << what;
  if (!param.empty()) {
    EXPECT_EQ(j["error"]["param"], param) << what;
  }
}

TEST(Errors, TableOfBadRequests) {
  // max_model_len 256; unknown fields are errors (--strict-request-fields)
  ServerFixture f("", 1u << 20, 256, false, [](server::ServerOptions& o) { o.strict_request_fields = true; });
  std::string long_prompt;
  for (int i = 0; i < 400; ++i) long_prompt += "word ";
  const std::vector<Case> cases = {
      {"malformed JSON", "/v1/completions", "{\"prompt\": \"x\",", 400, ""},
      {"body not an object", "/v1/completions", "[1,2]", 400, ""},
      {"empty body", "/v1/chat/completions", "", 400, ""},
      {"missing prompt", "/v1/completions", json{{"max_tokens", 1}}.dump(), 400, "prompt"},
      {"prompt wrong type", "/v1/completions", json{{"prompt", 5}}.dump(), 400, "prompt"},
      {"prompt token out of range", "/v1/completions", json{{"prompt", {1, 99999}}}.dump(), 400, "prompt"},
      {"empty prompt", "/v1/completions", json{{"prompt", ""}}.dump(), 400, "prompt"},
      {"max_tokens wrong type", "/v1/completions", json{{"prompt", "x"}, {"max_tokens", "5"}}.dump(), 400,
       "max_tokens"},
      {"max_tokens negative", "/v1/completions", json{{"prompt", "x"}, {"max_tokens", -1}}.dump(), 400, "max_tokens"},
      {"max_tokens zero", "/v1/completions", json{{"prompt", "x"}, {"max_tokens", 0}}.dump(), 400, "max_tokens"},
      {"max_tokens huge", "/v1/completions", json{{"prompt", "x"}, {"max_tokens", 1000000000}}.dump(), 400,
       "max_tokens"},
      {"max_tokens fractional", "/v1/completions", json{{"prompt", "x"}, {"max_tokens", 2.5}}.dump(), 400,
       "max_tokens"},
      {"prompt longer than max-model-len", "/v1/completions", json{{"prompt", long_prompt}}.dump(), 400, "prompt"},
      {"temperature out of range", "/v1/completions", json{{"prompt", "x"}, {"temperature", 3}}.dump(), 400,
       "temperature"},
      {"temperature wrong type", "/v1/completions", json{{"prompt", "x"}, {"temperature", "hot"}}.dump(), 400,
       "temperature"},
      {"top_p zero", "/v1/completions", json{{"prompt", "x"}, {"top_p", 0}}.dump(), 400, "top_p"},
      {"n zero", "/v1/completions", json{{"prompt", "x"}, {"n", 0}}.dump(), 400, "n"},
      {"stream wrong type", "/v1/completions", json{{"prompt", "x"}, {"stream", "yes"}}.dump(), 400, "stream"},
      {"stop wrong type", "/v1/completions", json{{"prompt", "x"}, {"stop", 3}}.dump(), 400, "stop"},
      {"logprobs too many", "/v1/completions", json{{"prompt", "x"}, {"logprobs", 50}}.dump(), 400, "logprobs"},
      {"unknown field", "/v1/completions", json{{"prompt", "x"}, {"frobnicate", 1}}.dump(), 400, "frobnicate"},
      {"suffix", "/v1/completions", json{{"prompt", "x"}, {"suffix", "end"}}.dump(), 400, "suffix"},
      {"logit_bias key not a token id", "/v1/completions", json{{"prompt", "x"}, {"logit_bias", {{"abc", 10}}}}.dump(),
       400, "logit_bias.abc"},
      {"logit_bias out of range", "/v1/completions", json{{"prompt", "x"}, {"logit_bias", {{"5", 101}}}}.dump(), 400,
       "logit_bias.5"},
      {"prompt_logprobs too many", "/v1/completions", json{{"prompt", "x"}, {"prompt_logprobs", 50}}.dump(), 400,
       "prompt_logprobs"},
      {"prompt_logprobs negative", "/v1/completions", json{{"prompt", "x"}, {"prompt_logprobs", -2}}.dump(), 400,
       "prompt_logprobs"},
      {"stream_options without stream", "/v1/completions",
       json{{"prompt", "x"}, {"stream_options", {{"include_usage", true}}}}.dump(), 400, "stream_options"},
      {"missing messages", "/v1/chat/completions", json{{"model", "tiny"}}.dump(), 400, "messages"},
      {"empty messages", "/v1/chat/completions", json{{"messages", json::array()}}.dump(), 400, "messages"},
      {"bad role", "/v1/chat/completions", json{{"messages", {{{"role", "robot"}, {"content", "x"}}}}}.dump(), 400,
       "messages[0].role"},
      {"image content", "/v1/chat/completions",
       json{{"messages", {{{"role", "user"}, {"content", {{{"type", "image_url"}, {"image_url", "u"}}}}}}}}.dump(), 400,
       "messages[0].content[0].type"},
      {"unknown message field", "/v1/chat/completions",
       json{{"messages", {{{"role", "user"}, {"content", "x"}, {"mood", "happy"}}}}}.dump(), 400, "messages[0].mood"},
      {"tool without id", "/v1/chat/completions", json{{"messages", {{{"role", "tool"}, {"content", "x"}}}}}.dump(),
       400, "messages[0].tool_call_id"},
      {"tool_choice without tools", "/v1/chat/completions", json{{"messages", kMsgs}, {"tool_choice", "auto"}}.dump(),
       400, "tool_choice"},
      {"bad tools", "/v1/chat/completions", json{{"messages", kMsgs}, {"tools", {{{"type", "function"}}}}}.dump(), 400,
       "tools[0]"},
      {"top_logprobs without logprobs", "/v1/chat/completions", json{{"messages", kMsgs}, {"top_logprobs", 2}}.dump(),
       400, "top_logprobs"},
      {"chat max_completion_tokens negative", "/v1/chat/completions",
       json{{"messages", kMsgs}, {"max_completion_tokens", -5}}.dump(), 400, "max_completion_tokens"},
      {"unknown model", "/v1/completions", json{{"prompt", "x"}, {"model", "gpt-9"}}.dump(), 404, ""},
      {"unknown model (chat)", "/v1/chat/completions", json{{"messages", kMsgs}, {"model", "gpt-9"}}.dump(), 404, ""},
      {"unknown path", "/v1/embeddings", "{}", 404, ""},
      {"detokenize bad id", "/detokenize", json{{"tokens", {1, -3}}}.dump(), 400, "tokens"},
      {"tokenize missing prompt", "/tokenize", json{{"model", "tiny"}}.dump(), 400, "prompt"},
  };
  for (const auto& c : cases) {
    auto r = f.client().post(c.path, c.body);
    expect_error(r, c.status, c.param, c.name);
  }
  EXPECT_TRUE(f.engine.submitted_copy().empty()) << "no bad request may reach the engine";
  // Still serving.
  EXPECT_EQ(f.post("/v1/completions", {{"prompt", "x"}, {"max_tokens", 1}}).status, 200);
  int expected_400 = 0;
  for (const auto& c : cases) expected_400 += std::string(c.path) == "/v1/completions" && c.status == 400;
  EXPECT_EQ(f.server->metrics().http_count("/v1/completions", 400), expected_400);
}

// A request that can never fit gets a 400 naming the tokens asked, max_model_len and what limits it.
TEST(Errors, TooLongNamesTheNumbers) {
  ServerFixture f;  // max_model_len 256
  f.engine.limit_note = "the MLA cache holds 256 tokens in all";
  const std::vector<int> prompt(200, 7);
  auto r = f.post("/v1/completions", {{"prompt", prompt}, {"max_tokens", 100}});
  expect_error(r, 400, "max_tokens", "prompt + max_tokens beyond max_model_len");
  std::string msg = json::parse(r.body)["error"]["message"];
  for (const char* want : {"256 tokens", "300 tokens", "200 in the prompt", "100 in the completion",
                           "(the MLA cache holds 256 tokens in all)"})
    EXPECT_NE(msg.find(want), std::string::npos) << want << " not in: " << msg;
  r = f.post("/v1/completions", {{"prompt", std::vector<int>(256, 7)}});
  expect_error(r, 400, "prompt", "prompt alone fills max_model_len");
  msg = json::parse(r.body)["error"]["message"];
  for (const char* want : {"256 tokens", "your prompt has 256", "(the MLA cache holds 256 tokens in all)"})
    EXPECT_NE(msg.find(want), std::string::npos) << want << " not in: " << msg;
  EXPECT_TRUE(f.engine.submitted_copy().empty());
  // Fits exactly: accepted.
  EXPECT_EQ(f.post("/v1/completions", {{"prompt", prompt}, {"max_tokens", 56}}).status, 200);
}

// A 1,048,000-token prompt (issue 13's long-context case) fits the default body limit and reaches the engine.
TEST(Errors, MillionTokenPromptFitsTheDefaultBodyLimit) {
  ServerFixture f("", server::HttpServerOptions{}.max_body_bytes, int64_t(1) << 21);
  std::vector<int> prompt(1048000);
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = int(1000 + i % 1000);
  const std::string body = json{{"prompt", prompt}, {"max_tokens", 1}}.dump();
  std::printf("  1,048,000 token ids: %.1f MB of JSON\n", double(body.size()) / 1e6);
  auto r = f.client().post("/v1/completions", body);
  ASSERT_EQ(r.status, 200) << r.body.substr(0, 300);
  const auto sub = f.engine.submitted_copy();
  ASSERT_EQ(sub.size(), 1u);
  EXPECT_EQ(sub[0].prompt_tokens.size(), 1048000u);
  EXPECT_EQ(sub[0].prompt_tokens[123456], 1000 + 123456 % 1000);
}

TEST(Errors, MethodNotAllowed) {
  ServerFixture f;
  auto c = f.client();
  auto r = c.get("/v1/completions");
  expect_error(r, 405, "", "GET on a POST endpoint");
  r = c.post("/v1/models", "{}");
  expect_error(r, 405, "", "POST on a GET endpoint");
  r = c.request(test::http::verb::delete_, "/health");
  EXPECT_EQ(r.status, 405);
}

TEST(Errors, ApiKey) {
  ServerFixture f("sekret");
  auto c = f.client();
  // No key needed, as in vLLM: the probes and the Prometheus scrape (--protect-metrics closes /metrics).
  for (const char* path : {"/health", "/metrics", "/version"}) EXPECT_EQ(c.get(path).status, 200) << path;
  for (const char* path : {"/v1/models"}) {
    expect_error(c.get(path), 401, "", path);
    expect_error(c.get(path, {{"Authorization", "Bearer wrong"}}), 401, "", path);
    EXPECT_EQ(c.get(path, {{"Authorization", "Bearer sekret"}}).status, 200) << path;
  }
  expect_error(c.post("/v1/completions", json{{"prompt", "x"}}.dump()), 401, "", "completions");
  // As in vLLM, the key guards /v1 only: /tokenize answers without it, an unknown path is a 404.
  EXPECT_EQ(c.post("/tokenize", json{{"prompt", "x"}}.dump()).status, 200);
  expect_error(c.get("/nope"), 404, "", "unknown path without key");
  expect_error(c.get("/v1/nope"), 401, "", "unknown /v1 path without key");
  EXPECT_EQ(
      c.post("/v1/completions", json{{"prompt", "x"}, {"max_tokens", 1}}.dump(), {{"Authorization", "Bearer sekret"}})
          .status,
      200);
  EXPECT_EQ(json::parse(c.post("/v1/completions", "{", {{"Authorization", "Bearer sekret"}}).body)["error"]["type"],
            "invalid_request_error");
}

TEST(Errors, OversizedBody) {
  ServerFixture f("", 4096);
  auto r = f.client().post("/v1/completions", json{{"prompt", std::string(10000, 'a')}}.dump());
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(f.post("/v1/completions", {{"prompt", "x"}, {"max_tokens", 1}}).status, 200);
}

TEST(Errors, QueueFullGets429) {
  ServerFixture f;
  f.engine.max_live = 2;
  f.engine.delay = std::chrono::milliseconds(20);
  std::vector<std::thread> ts;
  std::atomic<int> ok{0};
  for (int i = 0; i < 2; ++i)
    ts.emplace_back([&] { ok += f.post("/v1/completions", {{"prompt", "x"}, {"max_tokens", 10}}).status == 200; });
  while (f.engine.live() < 2) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  auto r = f.post("/v1/completions", {{"prompt", "y"}, {"max_tokens", 10}});
  expect_error(r, 429, "", "queue full");
  // n=3 with room for none: nothing is left running.
  r = f.post("/v1/completions", {{"prompt", "y"}, {"max_tokens", 10}, {"n", 3}});
  EXPECT_EQ(r.status, 429);
  for (auto& t : ts) t.join();
  EXPECT_EQ(ok.load(), 2);
  EXPECT_EQ(f.post("/v1/completions", {{"prompt", "z"}, {"max_tokens", 1}}).status, 200);
}

TEST(Errors, PartialSubmitIsRolledBack) {
  ServerFixture f;
  f.engine.max_live = 2;
  f.engine.delay = std::chrono::milliseconds(50);
  auto r = f.post("/v1/completions", {{"prompt", "y"}, {"max_tokens", 10}, {"n", 3}});
  EXPECT_EQ(r.status, 429);
  EXPECT_EQ(f.engine.aborted_copy().size(), 2u);  // the two that got in were aborted
}

TEST(Errors, ClientDisconnectMidStreamAbortsTheRequest) {
  ServerFixture f;
  f.engine.delay = std::chrono::milliseconds(20);
  {
    auto c = f.client();
    test::http::request<test::http::string_body> req{test::http::verb::post, "/v1/completions", 11};
    req.set(test::http::field::host, "x");
    req.body() = json{{"prompt", "x"}, {"max_tokens", 200}, {"stream", true}}.dump();
    req.prepare_payload();
    test::http::write(c.stream(), req);
    char b[512];
    c.stream().socket().read_some(test::net::buffer(b));  // headers / first chunk arrived
  }                                                       // disconnect
  for (int i = 0; i < 200 && f.engine.aborted_copy().empty(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  auto ab = f.engine.aborted_copy();
  ASSERT_EQ(ab.size(), 1u);
  EXPECT_EQ(ab[0], f.engine.submitted_copy()[0].request_id);
  for (int i = 0; i < 200 && f.server->requests_in_progress() > 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(f.server->requests_in_progress(), 0);
  EXPECT_EQ(f.server->metrics().http_count("/v1/completions", 499), 1);
  EXPECT_EQ(f.server->metrics().finished("abort"), 1);
  // A non-streaming request whose client leaves is aborted too.
  {
    auto c = f.client();
    test::http::request<test::http::string_body> req{test::http::verb::post, "/v1/chat/completions", 11};
    req.set(test::http::field::host, "x");
    req.body() = json{{"messages", kMsgs}, {"max_tokens", 200}}.dump();
    req.prepare_payload();
    test::http::write(c.stream(), req);
    std::this_thread::sleep_for(std::chrono::milliseconds(60));
  }
  for (int i = 0; i < 200 && f.engine.aborted_copy().size() < 2; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(f.engine.aborted_copy().size(), 2u);
  f.engine.delay = std::chrono::milliseconds(0);
  EXPECT_EQ(f.post("/v1/completions", {{"prompt", "x"}, {"max_tokens", 2}}).status, 200);
}

TEST(Errors, StopReasonJson) {
  server::SamplingOptions o;
  o.stop = {"END", "42"};
  o.stop_token_ids = {7};
  EXPECT_EQ(server::stop_reason_json(o, FinishReason::Stop, "END"), "END");
  EXPECT_EQ(server::stop_reason_json(o, FinishReason::Stop, "42"), "42");  // a stop string that looks like a number
  EXPECT_EQ(server::stop_reason_json(o, FinishReason::Stop, "7"), 7);
  EXPECT_TRUE(server::stop_reason_json(o, FinishReason::Stop, "1792").is_null());  // EOS
  EXPECT_TRUE(server::stop_reason_json(o, FinishReason::Length, "END").is_null());
}

}  // namespace
}  // namespace ds::test
