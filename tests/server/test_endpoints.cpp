// /health, /v1/models, /version, /metrics, /tokenize, /detokenize, graceful shutdown; metrics units.
#include <gtest/gtest.h>

#include <regex>
#include <thread>

#include "prometheus_text.h"
#include "server/metrics.h"
#include "server_fixture.h"

namespace ds::test {
namespace {

double metric(const std::string& body, const std::string& series) { return prometheus_sample(body, series); }

TEST(Endpoints, HealthModelsVersion) {
  ServerFixture f;
  auto c = f.client();
  EXPECT_EQ(c.get("/health").status, 200);
  auto r = c.get("/v1/models");
  ASSERT_EQ(r.status, 200);
  json j = json::parse(r.body);
  EXPECT_EQ(j["object"], "list");
  ASSERT_EQ(j["data"].size(), 2u);
  EXPECT_EQ(j["data"][0]["id"], "tiny");
  EXPECT_EQ(j["data"][0]["object"], "model");
  EXPECT_EQ(j["data"][0]["max_model_len"], 256);
  EXPECT_EQ(j["data"][1]["id"], "tiny-alias");
  EXPECT_EQ(json::parse(c.get("/version").body)["version"], "0.1.0");
  // The alias is accepted and reported.
  r = c.post("/v1/completions", json{{"prompt", "x"}, {"max_tokens", 1}, {"model", "tiny-alias"}}.dump());
  EXPECT_EQ(json::parse(r.body)["model"], "tiny-alias");
}

// OpenAI's model retrieval (GET /v1/models/{id}, slashes escaped or not) and SageMaker's POST /invocations,
// which vLLM routes by the body: "messages" a chat completion, "prompt" a completion.
TEST(Endpoints, RetrieveModelAndInvocations) {
  ServerFixture f("", 1u << 20, 256, false, [](server::ServerOptions& o) { o.model_names.push_back("org/name"); });
  auto c = f.client();
  auto r = c.get("/v1/models/tiny-alias");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body)["id"], "tiny-alias");
  EXPECT_EQ(json::parse(r.body)["object"], "model");
  for (const char* p : {"/v1/models/org/name", "/v1/models/org%2Fname", "/v1/models/org%2fname"}) {
    r = c.get(p);
    ASSERT_EQ(r.status, 200) << p << r.body;
    EXPECT_EQ(json::parse(r.body)["id"], "org/name") << p;
  }
  r = c.get("/v1/models/nope");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(json::parse(r.body)["error"]["code"], "model_not_found");
  EXPECT_EQ(c.post("/v1/models/tiny", "{}").status, 405);

  r = c.post("/invocations", json{{"messages", {{{"role", "user"}, {"content", "hi"}}}}, {"max_tokens", 2}}.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body)["object"], "chat.completion");
  r = c.post("/invocations", json{{"prompt", "hi"}, {"max_tokens", 2}}.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body)["object"], "text_completion");
  r = c.post("/invocations", json{{"input", "hi"}}.dump());
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("messages"), std::string::npos) << r.body;
}

// A backend that can run no more steps (a parallel group whose node went away): /health and new requests
// answer 503 with the reason; /version (liveness) stays 200.
TEST(Endpoints, AFailedBackendMakesHealthAndRequests503WithTheReason) {
  ServerFixture f;
  auto c = f.client();
  ASSERT_EQ(c.get("/health").status, 200);
  f.engine.set_failure("rank 1: rank 1 (node 1) closed the connection");
  auto r = c.get("/health");
  EXPECT_EQ(r.status, 503);
  EXPECT_NE(r.body.find("can run no more steps: rank 1: rank 1 (node 1) closed the connection"), std::string::npos) << r.body;
  r = f.post("/v1/completions", {{"prompt", "x"}, {"max_tokens", 1}});
  EXPECT_EQ(r.status, 503);
  EXPECT_NE(r.body.find("(node 1) closed the connection"), std::string::npos) << r.body;
  r = f.post("/v1/chat/completions", {{"messages", {{{"role", "user"}, {"content", "hi"}}}}, {"max_tokens", 1}});
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_EQ(c.get("/version").status, 200);
}

TEST(Endpoints, TokenizeAndDetokenize) {
  ServerFixture f;
  auto r = f.post("/tokenize", {{"prompt", "Hello <|im_end|> world"}, {"return_token_strs", true}});
  ASSERT_EQ(r.status, 200) << r.body;
  json j = json::parse(r.body);
  auto ids = f.tok->encode("Hello <|im_end|> world");
  EXPECT_EQ(j["tokens"].get<std::vector<int32_t>>(), ids);
  EXPECT_EQ(j["count"], ids.size());
  EXPECT_EQ(j["max_model_len"], 256);
  ASSERT_EQ(j["token_strs"].size(), ids.size());
  r = f.post("/detokenize", {{"tokens", ids}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body)["prompt"], "Hello <|im_end|> world");
  // Chat form: the same ids as the chat endpoint's prompt.
  json msgs = json::array({{{"role", "user"}, {"content", "hi"}}});
  r = f.post("/tokenize", {{"messages", msgs}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body)["tokens"].get<std::vector<int32_t>>(),
            f.tok->encode(f.tok->apply_chat_template(msgs, nullptr, true)));
}

TEST(Endpoints, MetricsAccountForRequests) {
  ServerFixture f;
  int completion_tokens = 0, prompt_tokens = 0;
  for (int i = 0; i < 5; ++i) {
    json j = json::parse(f.post("/v1/completions", {{"prompt", "abc"}, {"max_tokens", i + 1}, {"n", 2}}).body);
    completion_tokens += j["usage"]["completion_tokens"].get<int>();
    prompt_tokens += 2 * j["usage"]["prompt_tokens"].get<int>();  // per choice in the metrics
  }
  f.post("/v1/completions", {{"prompt", 5}});  // a 400
  auto r = f.client().get("/metrics");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type.rfind("text/plain", 0), 0u);
  const std::string& m = r.body;
  EXPECT_EQ(metric(m, "deltaserve_http_requests_total{endpoint=\"/v1/completions\",status=\"200\"}"), 5);
  EXPECT_EQ(metric(m, "deltaserve_http_requests_total{endpoint=\"/v1/completions\",status=\"400\"}"), 1);
  EXPECT_EQ(metric(m, "deltaserve_generation_tokens_total"), completion_tokens);
  EXPECT_EQ(metric(m, "deltaserve_prompt_tokens_total"), prompt_tokens);
  EXPECT_EQ(metric(m, "deltaserve_request_success_total{finished_reason=\"length\"}"), 10);
  EXPECT_EQ(metric(m, "deltaserve_e2e_request_latency_seconds_count"), 10);
  EXPECT_EQ(metric(m, "deltaserve_time_to_first_token_seconds_count"), 10);
  EXPECT_EQ(metric(m, "deltaserve_time_per_output_token_seconds_count"), 8);  // choices with > 1 token
  EXPECT_EQ(metric(m, "deltaserve_num_requests_running"), 0);
  EXPECT_EQ(metric(m, "deltaserve_kv_cache_usage_perc"), 0.25);
  EXPECT_EQ(metric(m, "deltaserve_state_cache_usage_perc"), 0.5);
  EXPECT_NE(m.find("# TYPE deltaserve_time_to_first_token_seconds histogram"), std::string::npos);
}

TEST(Endpoints, PrefixCacheInUsageAndMetrics) {
  ServerFixture f;
  f.engine.cached_tokens = 2;  // the fake reports min(2, prompt tokens) as served from the cache
  json j = json::parse(f.post("/v1/completions", {{"prompt", "abc def ghi"}, {"max_tokens", 2}, {"n", 3}}).body);
  const int prompt = j["usage"]["prompt_tokens"].get<int>();
  EXPECT_EQ(j["usage"]["prompt_tokens_details"]["cached_tokens"], std::min(2, prompt)) << "once per prompt, as prompt_tokens";
  json msgs = json::array({{{"role", "user"}, {"content", "hello there"}}});
  j = json::parse(f.post("/v1/chat/completions", {{"messages", msgs}, {"max_tokens", 2}}).body);
  EXPECT_EQ(j["usage"]["prompt_tokens_details"]["cached_tokens"], std::min(2, j["usage"]["prompt_tokens"].get<int>()));
  const std::string m = f.client().get("/metrics").body;
  EXPECT_EQ(metric(m, "deltaserve_prefix_cache_queries_total"), 100);
  EXPECT_EQ(metric(m, "deltaserve_prefix_cache_hits_total"), 40);
  EXPECT_EQ(metric(m, "deltaserve_prefix_snapshots"), 3);
  EXPECT_EQ(metric(m, "deltaserve_prefix_snapshot_capacity"), 12);
  EXPECT_EQ(metric(m, "deltaserve_prefix_snapshot_usage_perc"), 0.25);
  EXPECT_EQ(metric(m, "deltaserve_prefix_snapshot_evictions_total"), 7);
  EXPECT_EQ(metric(m, "deltaserve_prefix_snapshot_nonfinite_total"), 0);
}

// vLLM's POST /reset_prefix_cache and SGLang's POST /flush_cache, one behaviour: 200 {"status": "ok"} when idle;
// 409 naming the requests in progress (nothing reset); 200 "nothing to flush" with prefix caching off. Outside /v1
// the API key does not guard them (vLLM's rule, as /tokenize); the metrics label each path.
TEST(Endpoints, ResetPrefixCacheAndFlushCache) {
  ServerFixture f("sk-test");
  auto c = f.client();
  for (const char* p : {"/reset_prefix_cache", "/flush_cache"}) {
    auto r = c.post(p, "");
    ASSERT_EQ(r.status, 200) << p << r.body;
    json j = json::parse(r.body);
    EXPECT_EQ(j["status"], "ok") << p;
    EXPECT_FALSE(j["message"].get<std::string>().empty()) << p;
    EXPECT_EQ(c.get(p).status, 405) << p;
  }
  EXPECT_EQ(f.engine.resets.load(), 2);

  f.engine.delay = std::chrono::milliseconds(20);
  Reply slow;
  std::thread t([&] {
    slow = f.client().post("/v1/completions", json{{"prompt", "x"}, {"max_tokens", 50}}.dump(),
                           {{"Authorization", "Bearer sk-test"}});
  });
  while (f.engine.live() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  for (const char* p : {"/reset_prefix_cache", "/flush_cache"}) {
    auto r = c.post(p, "{}");
    ASSERT_EQ(r.status, 409) << p << r.body;
    json e = json::parse(r.body)["error"];
    EXPECT_EQ(e["code"], "requests_in_progress") << p;
    EXPECT_NE(e["message"].get<std::string>().find("1 request(s) are in progress"), std::string::npos) << r.body;
  }
  t.join();
  EXPECT_EQ(slow.status, 200) << slow.body;
  EXPECT_EQ(f.engine.resets.load(), 2) << "nothing reset while a request ran";
  while (f.engine.live() > 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(c.post("/flush_cache", "").status, 200);
  EXPECT_EQ(f.engine.resets.load(), 3);

  f.engine.prefix_caching = false;
  auto r = c.post("/reset_prefix_cache", "");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_NE(json::parse(r.body)["message"].get<std::string>().find("nothing to flush"), std::string::npos) << r.body;
  EXPECT_EQ(f.engine.resets.load(), 3);

  const std::string m = c.get("/metrics").body;
  EXPECT_EQ(metric(m, "deltaserve_http_requests_total{endpoint=\"/reset_prefix_cache\",status=\"200\"}"), 2);
  EXPECT_EQ(metric(m, "deltaserve_http_requests_total{endpoint=\"/reset_prefix_cache\",status=\"409\"}"), 1);
  EXPECT_EQ(metric(m, "deltaserve_http_requests_total{endpoint=\"/flush_cache\",status=\"200\"}"), 2);
  EXPECT_EQ(metric(m, "deltaserve_http_requests_total{endpoint=\"/flush_cache\",status=\"409\"}"), 1);
}

TEST(Metrics, HistogramBucketsAreCumulative) {
  server::Histogram h({0.1, 1.0, 10.0});
  for (double v : {0.05, 0.1, 0.5, 2.0, 50.0}) h.observe(v);
  std::string out;
  h.render("x", &out);
  EXPECT_EQ(out,
            "x_bucket{le=\"0.1\"} 2\nx_bucket{le=\"1\"} 3\nx_bucket{le=\"10\"} 4\nx_bucket{le=\"+Inf\"} 5\n"
            "x_sum 52.65\nx_count 5\n");
}

TEST(Metrics, TpotExcludesTheFirstToken) {
  server::ServerMetrics m;
  m.record_generation({10, 5, "stop", 0.5, 1.3});  // 4 tokens after the first in 0.8 s
  std::string out = m.render({});
  EXPECT_EQ(metric(out, "deltaserve_time_per_output_token_seconds_sum"), 0.2);
  EXPECT_EQ(metric(out, "deltaserve_time_to_first_token_seconds_sum"), 0.5);
  EXPECT_EQ(metric(out, "deltaserve_e2e_request_latency_seconds_sum"), 1.3);
  EXPECT_EQ(metric(out, "deltaserve_request_success_total{finished_reason=\"stop\"}"), 1);
}

TEST(Endpoints, GracefulShutdownFinishesRequestsInProgress) {
  ServerFixture f;
  f.engine.delay = std::chrono::milliseconds(10);
  Reply slow;
  std::thread t([&] { slow = f.post("/v1/completions", {{"prompt", "x"}, {"max_tokens", 30}}); });
  while (f.server->requests_in_progress() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  auto idle = f.client();  // an idle keep-alive connection
  std::thread stopper([&] { f.server->shutdown(std::chrono::milliseconds(5000)); });
  t.join();
  stopper.join();
  EXPECT_EQ(slow.status, 200);
  EXPECT_EQ(json::parse(slow.body)["usage"]["completion_tokens"], 30);
  EXPECT_TRUE(f.engine.aborted_copy().empty());
}

TEST(Endpoints, ShutdownPastTheGraceCancels) {
  ServerFixture f;
  f.engine.delay = std::chrono::milliseconds(50);
  Reply slow;
  std::thread t([&] { slow = f.post("/v1/completions", {{"prompt", "x"}, {"max_tokens", 200}}); });
  while (f.server->requests_in_progress() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  auto t0 = std::chrono::steady_clock::now();
  f.server->shutdown(std::chrono::milliseconds(100));
  t.join();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  EXPECT_EQ(f.engine.aborted_copy().size(), 1u);
  EXPECT_EQ(slow.status, 503);
}

}  // namespace
}  // namespace ds::test
