// The lenient request surface: unknown fields (warned once, or 400 with --strict-request-fields),
// CORS (preflight and response headers), /ping, usage.prompt_tokens_details.cached_tokens.
#include <gtest/gtest.h>

#include "server/json_fields.h"
#include "server_fixture.h"

namespace ds::test {
namespace {

const json kMsgs = json::array({{{"role", "user"}, {"content", "hi"}}});

TEST(ApiSurface, UnknownFieldsAreIgnoredByDefaultAndRejectedWhenStrict) {
  ServerFixture lenient;
  auto r =
      lenient.post("/v1/chat/completions", {{"messages", {{{"role", "user"}, {"content", "x"}, {"mood", "happy"}}}},
                                            {"max_tokens", 2},
                                            {"frobnicate", 1},
                                            {"stream_options_x", {{"a", 1}}}});
  EXPECT_EQ(r.status, 200) << r.body;
  r = lenient.post("/v1/completions", {{"prompt", "x"}, {"max_tokens", 1}, {"frobnicate", true}});
  EXPECT_EQ(r.status, 200) << r.body;
  ASSERT_EQ(lenient.engine.submitted_copy().size(), 2u);

  ServerFixture strict("", 1u << 20, 256, false, [](server::ServerOptions& o) { o.strict_request_fields = true; });
  r = strict.post("/v1/completions", {{"prompt", "x"}, {"max_tokens", 1}, {"frobnicate", true}});
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(json::parse(r.body)["error"]["param"], "frobnicate");
  EXPECT_TRUE(strict.engine.submitted_copy().empty());
}

TEST(ApiSurface, UnknownFieldWarningIsLoggedOncePerFieldName) {
  server::UnknownFieldPolicy p(false);
  EXPECT_TRUE(p.warn_once("frobnicate"));
  EXPECT_FALSE(p.warn_once("frobnicate"));
  EXPECT_TRUE(p.warn_once("messages[0].mood"));
  EXPECT_FALSE(p.warn_once("messages[7].mood"));  // the same name at another index
  EXPECT_TRUE(p.warn_once("other"));
}

TEST(ApiSurface, CorsPreflightAndResponseHeaders) {
  ServerFixture f("sekret");  // preflights carry no key
  auto c = f.client();
  auto r = c.request(http::verb::options, "/v1/chat/completions", {},
                     {{"Origin", "https://app.example"},
                      {"Access-Control-Request-Method", "POST"},
                      {"Access-Control-Request-Headers", "authorization, content-type"}});
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("Access-Control-Allow-Origin"), "*");
  EXPECT_EQ(r.header("Access-Control-Allow-Headers"), "authorization, content-type");
  EXPECT_NE(r.header("Access-Control-Allow-Methods").find("POST"), std::string::npos);
  // An ordinary response to a browser request carries the header; without Origin none is sent.
  r = c.get("/v1/models", {{"Authorization", "Bearer sekret"}, {"Origin", "https://app.example"}});
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("Access-Control-Allow-Origin"), "*");
  r = c.get("/v1/models", {{"Authorization", "Bearer sekret"}});
  EXPECT_EQ(r.header("Access-Control-Allow-Origin"), "");
  // Errors too (a browser must be able to read the 401).
  r = c.get("/v1/models", {{"Origin", "https://app.example"}});
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(r.header("Access-Control-Allow-Origin"), "*");
}

TEST(ApiSurface, CorsWithAnOriginList) {
  ServerFixture f("", 1u << 20, 256, false,
                  [](server::ServerOptions& o) { o.allowed_origins = {"https://good.example"}; });
  auto c = f.client();
  auto r = c.request(http::verb::options, "/v1/completions", {},
                     {{"Origin", "https://good.example"}, {"Access-Control-Request-Method", "POST"}});
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("Access-Control-Allow-Origin"), "https://good.example");
  EXPECT_EQ(r.header("Vary"), "Origin");
  r = c.request(http::verb::options, "/v1/completions", {},
                {{"Origin", "https://evil.example"}, {"Access-Control-Request-Method", "POST"}});
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.header("Access-Control-Allow-Origin"), "");
  r = c.post("/v1/completions", json{{"prompt", "x"}, {"max_tokens", 1}}.dump(), {{"Origin", "https://evil.example"}});
  EXPECT_EQ(r.status, 200);  // served (CORS is the browser's check), but not readable by that page
  EXPECT_EQ(r.header("Access-Control-Allow-Origin"), "");
}

TEST(ApiSurface, PingAnswersWithoutAKey) {
  ServerFixture f("sekret");
  auto c = f.client();
  EXPECT_EQ(c.get("/ping").status, 200);
  EXPECT_EQ(c.post("/ping", "").status, 200);
  EXPECT_EQ(c.get("/v1/models").status, 401);
}

TEST(ApiSurface, UsageReportsCachedPromptTokens) {
  ServerFixture f;
  auto r = f.post("/v1/chat/completions", {{"messages", kMsgs}, {"max_tokens", 2}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body)["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
  f.engine.cached_tokens = 3;
  r = f.post("/v1/completions", {{"prompt", "hello there friend"}, {"max_tokens", 2}, {"n", 2}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body)["usage"]["prompt_tokens_details"]["cached_tokens"], 3);  // once per prompt
  r = f.post("/v1/chat/completions",
             {{"messages", kMsgs}, {"max_tokens", 2}, {"stream", true}, {"stream_options", {{"include_usage", true}}}});
  auto events = sse_events(r.body);
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events[events.size() - 2]["usage"]["prompt_tokens_details"]["cached_tokens"], 3);
}

}  // namespace
}  // namespace ds::test
