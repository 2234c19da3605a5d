// The HTTP path end to end against the mock server: streaming SSE of completions and chat, usage chunks,
// missing usage, split events, errors (HTTP status, mid-stream), an unreachable server, concurrency
// limits, every workload of run_bench with a consistent JSON result, and run_gsm8k.
#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <fstream>
#include <numeric>

#include "bench/bench.h"
#include "bench/eval_gsm8k.h"
#include "bench/gsm8k.h"
#include "bench/http_client.h"
#include "bench/request.h"
#include "core/error.h"
#include "mock_openai_server.h"

using namespace ds::bench;
using ds::bench::testing::MockBehavior;
using ds::bench::testing::MockOpenAIServer;
using nlohmann::json;

namespace {

// Runs one streamed request against `server`.
RequestRecord stream_once(const MockOpenAIServer& server, EndpointType type, const BenchPrompt& p) {
  boost::asio::io_context io;
  HttpClient client(io.get_executor(), parse_base_url(server.base_url()), 10.0);
  RequestOptions ro;
  ro.type = type;
  ro.path = endpoint_path(type);
  ro.model = "mock-model";
  RequestRecord rec;
  boost::asio::co_spawn(io, run_streaming_request(client, ro, p, Clock::now()),
                        [&](std::exception_ptr e, RequestRecord r) {
                          if (e) std::rethrow_exception(e);
                          rec = std::move(r);
                        });
  io.run();
  return rec;
}

BenchPrompt ids_prompt(int64_t n, int64_t max_tokens) {
  std::vector<int64_t> ids(static_cast<size_t>(n));
  std::iota(ids.begin(), ids.end(), 1);
  return BenchPrompt{json(ids), n, max_tokens};
}

BenchOptions quiet_options(const MockOpenAIServer& server) {
  BenchOptions o;
  o.base_url = server.base_url();
  o.progress = false;
  o.warmup = 0;
  return o;
}

// A closed loopback port: bind, note the port, close.
int closed_port() {
  boost::asio::io_context io;
  boost::asio::ip::tcp::acceptor a(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
  const int port = a.local_endpoint().port();
  a.close();
  return port;
}

// The JSON result agrees with itself: counts, token sums, lengths of the per-request arrays, durations.
void expect_consistent(const json& j, int64_t num_prompts) {
  ASSERT_EQ(j["input_lens"].size(), static_cast<size_t>(num_prompts));
  ASSERT_EQ(j["output_lens"].size(), static_cast<size_t>(num_prompts));
  ASSERT_EQ(j["ttfts"].size(), static_cast<size_t>(num_prompts));
  ASSERT_EQ(j["itls"].size(), static_cast<size_t>(num_prompts));
  EXPECT_EQ(j["completed"].get<int64_t>() + j["failed"].get<int64_t>(), num_prompts);
  int64_t out = 0, in = 0, completed = 0;
  double last_end = 0;
  for (int64_t i = 0; i < num_prompts; ++i) {
    if (!j["errors"][i].get<std::string>().empty()) continue;
    ++completed;
    out += j["output_lens"][i].get<int64_t>();
    in += j["input_lens"][i].get<int64_t>();
    // One ITL per content chunk after the first; the mock sends one token per chunk.
    EXPECT_EQ(static_cast<int64_t>(j["itls"][i].size()), j["output_lens"][i].get<int64_t>() - 1);
    EXPECT_GT(j["ttfts"][i].get<double>(), 0.0);
    EXPECT_LE(j["ttfts"][i].get<double>(), j["e2els"][i].get<double>());
    last_end = std::max(last_end, j["start_times"][i].get<double>() + j["e2els"][i].get<double>());
  }
  EXPECT_EQ(j["completed"].get<int64_t>(), completed);
  EXPECT_EQ(j["total_output_tokens"].get<int64_t>(), out);
  EXPECT_EQ(j["total_input_tokens"].get<int64_t>(), in);
  const double d = j["duration"].get<double>();
  EXPECT_GE(d, last_end);
  EXPECT_NEAR(j["request_throughput"].get<double>(), completed / d, 1e-9 * completed / d);
  EXPECT_NEAR(j["output_throughput"].get<double>(), out / d, 1e-9 * out / d + 1e-12);
  EXPECT_NEAR(j["total_token_throughput"].get<double>(), (in + out) / d, 1e-9 * (in + out) / d + 1e-12);
  EXPECT_LE(j["max_concurrent_requests"].get<int64_t>(), num_prompts);
  EXPECT_LE(j["median_ttft_ms"].get<double>(), j["p99_ttft_ms"].get<double>());
  EXPECT_LE(j["p95_itl_ms"].get<double>(), j["p99_itl_ms"].get<double>());
  EXPECT_LE(j["p99_itl_ms"].get<double>(), j["max_itl_ms"].get<double>());
}

}  // namespace

TEST(BenchHttp, ParseBaseUrl) {
  auto a = parse_base_url("http://localhost:8000/v1/");
  EXPECT_EQ(a.host, "localhost");
  EXPECT_EQ(a.port, "8000");
  EXPECT_EQ(a.prefix, "");
  auto b = parse_base_url("http://10.0.0.1/proxy");
  EXPECT_EQ(b.port, "80");
  EXPECT_EQ(b.prefix, "/proxy");
  EXPECT_EQ(parse_base_url("http://[::1]:9000").host, "::1");
  EXPECT_THROW(parse_base_url("https://api.openai.com"), ds::Error);
  EXPECT_THROW(parse_base_url("localhost:8000"), ds::Error);
  EXPECT_THROW(parse_base_url("http://host:port"), ds::Error);
}

TEST(BenchHttp, StreamedCompletionWithUsage) {
  MockBehavior behavior;
  behavior.token_delay_s = 0.002;
  MockOpenAIServer server(behavior);
  const RequestRecord r = stream_once(server, EndpointType::Completions, ids_prompt(12, 6));
  ASSERT_TRUE(r.success) << r.error;
  EXPECT_EQ(r.output_len, 6);
  EXPECT_EQ(r.prompt_len, 12);
  EXPECT_EQ(r.itl_s.size(), 5u);
  EXPECT_EQ(r.generated_text, "tok0 tok1 tok2 tok3 tok4 tok5 ");
  // The mock sleeps 2 ms before every token: the first arrives no sooner than 2 ms after the request, the
  // last no sooner than 12 ms (gaps alone can shrink when the client reads two chunks at once).
  const double last_chunk = r.ttft_s + std::accumulate(r.itl_s.begin(), r.itl_s.end(), 0.0);
  EXPECT_GE(r.ttft_s, 0.002);
  EXPECT_GE(last_chunk, 6 * 0.002);
  EXPECT_GE(r.latency_s, last_chunk - 1e-9);
  const auto got = server.received();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].target, "/v1/completions");
  EXPECT_EQ(got[0].body["stream"], true);
  EXPECT_EQ(got[0].body["stream_options"]["include_usage"], true);
  EXPECT_EQ(got[0].body["prompt"].size(), 12u);
}

TEST(BenchHttp, StreamedChatSkipsTheRoleChunk) {
  MockBehavior behavior;
  behavior.token_delay_s = 0.005;
  behavior.role_chunk = true;
  MockOpenAIServer server(behavior);
  BenchPrompt p{json::array({{{"role", "user"}, {"content", "one two three"}}}), 0, 4};
  const RequestRecord r = stream_once(server, EndpointType::Chat, p);
  ASSERT_TRUE(r.success) << r.error;
  EXPECT_EQ(r.output_len, 4);
  EXPECT_EQ(r.prompt_len, 3);  // from usage
  EXPECT_EQ(r.itl_s.size(), 3u);
  EXPECT_EQ(r.generated_text, "tok0 tok1 tok2 tok3 ");
  // The role chunk comes at once; TTFT waits for the first token, 5 ms later.
  EXPECT_GE(r.ttft_s, 0.005);
  EXPECT_EQ(server.received()[0].target, "/v1/chat/completions");
}

TEST(BenchHttp, WithoutUsageTokensAreCountedFromChunks) {
  MockBehavior behavior;
  behavior.send_usage = false;
  behavior.split_events = true;
  MockOpenAIServer server(behavior);
  const RequestRecord r = stream_once(server, EndpointType::Completions, ids_prompt(3, 9));
  ASSERT_TRUE(r.success) << r.error;
  EXPECT_EQ(r.output_len, 9);
  EXPECT_EQ(r.prompt_len, 3);  // the known id count
  EXPECT_EQ(r.itl_s.size(), 8u);
  BenchPrompt text{json("a b c d"), 0, 2};
  const RequestRecord t = stream_once(server, EndpointType::Completions, text);
  ASSERT_TRUE(t.success);
  EXPECT_EQ(t.prompt_len, 0);  // nobody knows without usage
}

TEST(BenchHttp, HttpErrorStatusBecomesTheRecordError) {
  MockBehavior behavior;
  behavior.status = 400;
  behavior.error_message = "max_tokens is too large";
  MockOpenAIServer server(behavior);
  const RequestRecord r = stream_once(server, EndpointType::Completions, ids_prompt(3, 2));
  EXPECT_FALSE(r.success);
  EXPECT_EQ(r.error, "HTTP 400: max_tokens is too large");
}

TEST(BenchHttp, ErrorInsideTheStreamFailsTheRequest) {
  MockBehavior behavior;
  behavior.error_after_tokens = 2;
  MockOpenAIServer server(behavior);
  const RequestRecord r = stream_once(server, EndpointType::Completions, ids_prompt(3, 5));
  EXPECT_FALSE(r.success);
  EXPECT_NE(r.error.find("mock failure mid-stream"), std::string::npos) << r.error;
}

TEST(BenchHttp, UnreachableServerIsATransportError) {
  boost::asio::io_context io;
  HttpClient client(io.get_executor(), parse_base_url("http://127.0.0.1:" + std::to_string(closed_port())), 5.0);
  HttpResult res;
  boost::asio::co_spawn(io, client.request({"GET", "/v1/models", "", ""}),
                        [&](std::exception_ptr, HttpResult r) { res = std::move(r); });
  io.run();
  EXPECT_EQ(res.status, 0);
  EXPECT_NE(res.transport_error.find("cannot connect"), std::string::npos) << res.transport_error;
}

TEST(BenchRun, UnreachableServerFailsWithAClearMessage) {
  BenchOptions o;
  o.base_url = "http://127.0.0.1:" + std::to_string(closed_port());
  o.num_prompts = 2;
  o.progress = false;
  try {
    run_bench(o);
    FAIL() << "expected ds::Error";
  } catch (const ds::Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot reach the server at http://127.0.0.1:"), std::string::npos)
        << e.what();
  }
}

TEST(BenchRun, WrongApiKeyIsRefusedUpFront) {
  MockBehavior behavior;
  behavior.api_key = "right";
  MockOpenAIServer server(behavior);
  BenchOptions o = quiet_options(server);
  o.num_prompts = 1;
  o.api_key = "wrong";
  try {
    run_bench(o);
    FAIL() << "expected ds::Error";
  } catch (const ds::Error& e) {
    EXPECT_NE(std::string(e.what()).find("HTTP 401: invalid API key"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("--api-key"), std::string::npos) << e.what();
  }
  EXPECT_EQ(server.received().size(), 1u);  // nothing after the refused GET /v1/models
  o.api_key = "right";
  EXPECT_EQ(run_bench(o).metrics.completed, 1);
}

TEST(BenchRun, RandomWorkloadOverCompletions) {
  MockBehavior behavior;
  behavior.token_delay_s = 0.001;
  MockOpenAIServer server(behavior);
  BenchOptions o = quiet_options(server);
  o.dataset = "random";
  o.num_prompts = 12;
  o.random.input_len = 20;
  o.random.output_len = 5;
  o.random.vocab_size = 100;
  o.max_concurrency = 3;
  o.warmup = 2;
  o.output_json = std::string(DS_BINARY_DIR) + "/bench_random.json";
  const BenchResult res = run_bench(o);
  EXPECT_EQ(res.metrics.completed, 12);
  EXPECT_EQ(res.metrics.failed, 0);
  EXPECT_EQ(res.metrics.total_input, 12 * 20);
  EXPECT_EQ(res.metrics.total_output, 12 * 5);
  EXPECT_LE(res.metrics.max_concurrent_requests, 3);
  EXPECT_LE(server.max_in_flight(), 3);
  // The JSON on disk is the result, and is consistent.
  json j = json::parse(std::ifstream(o.output_json));
  EXPECT_EQ(j["total_output_tokens"], 60);
  EXPECT_EQ(j["model_id"], "mock-model");  // from GET /v1/models
  EXPECT_EQ(j["max_concurrency"], 3);
  expect_consistent(j, 12);
  // Requests: 1 GET /v1/models, 2 warm-ups, 12 measured; random ids in range, ignore_eos on.
  const auto got = server.received();
  ASSERT_EQ(got.size(), 15u);
  EXPECT_EQ(got[0].target, "/v1/models");
  for (size_t i = 1; i < got.size(); ++i) {
    const json& b = got[i].body;
    EXPECT_EQ(b["model"], "mock-model");
    EXPECT_EQ(b["ignore_eos"], true);
    EXPECT_EQ(b["max_tokens"], 5);
    ASSERT_EQ(b["prompt"].size(), 20u);
    for (const auto& id : b["prompt"]) EXPECT_LT(id.get<int>(), 100);
  }
  EXPECT_NE(res.report.find("Serving Benchmark Result"), std::string::npos);
}

TEST(BenchRun, RandomWorkloadOverChatAtAFiniteRate) {
  MockOpenAIServer server;
  BenchOptions o = quiet_options(server);
  o.type = EndpointType::Chat;
  o.num_prompts = 10;
  o.random.input_len = 8;
  o.random.output_len = 3;
  o.request_rate = 200.0;
  o.api_key = "secret";
  const BenchResult res = run_bench(o);
  EXPECT_EQ(res.metrics.completed, 10);
  EXPECT_EQ(res.metrics.total_input, 10 * 8);  // the mock counts words, one token each
  EXPECT_EQ(res.metrics.total_output, 30);
  expect_consistent(res.json, 10);
  // Arrivals are spread: with 10 requests at 200/s the last goes out well after the first.
  EXPECT_GT(res.json["start_times"][9].get<double>(), 0.0);
  for (const auto& r : server.received()) EXPECT_EQ(r.authorization, "Bearer secret");
}

TEST(BenchRun, JsonlWorkload) {
  MockOpenAIServer server;
  const std::string path = std::string(DS_BINARY_DIR) + "/bench_run.jsonl";
  std::ofstream(path)
      << "{\"prompt\": \"one two three\", \"max_tokens\": 4}\n{\"prompt\": [7, 8], \"max_tokens\": 2}\n";
  BenchOptions o = quiet_options(server);
  o.dataset = "jsonl";
  o.dataset_path = path;
  const BenchResult res = run_bench(o);
  EXPECT_EQ(res.metrics.completed, 2);  // every line once
  EXPECT_EQ(res.metrics.total_input, 3 + 2);
  EXPECT_EQ(res.metrics.total_output, 4 + 2);
  expect_consistent(res.json, 2);
  for (const auto& r : server.received()) {
    if (r.method == "POST") {
      EXPECT_FALSE(r.body.contains("ignore_eos"));  // only random forces it
    }
  }
}

TEST(BenchRun, FixedWorkloadWithExplicitModelAndPercentiles) {
  MockOpenAIServer server;
  BenchOptions o = quiet_options(server);
  o.dataset = "fixed";
  o.prompt = "Say something";
  o.num_prompts = 5;
  o.output_len = 7;
  o.model = "my-model";
  o.max_concurrency = 1;
  o.percentiles = {50, 90, 99.9};
  const BenchResult res = run_bench(o);
  EXPECT_EQ(res.metrics.completed, 5);
  EXPECT_EQ(res.metrics.total_output, 35);
  EXPECT_EQ(res.metrics.max_concurrent_requests, 1);
  EXPECT_TRUE(res.json.contains("p99.9_itl_ms"));
  EXPECT_TRUE(res.json.contains("p90_ttft_ms"));
  for (const auto& r : server.received()) {
    if (r.method == "POST") {
      EXPECT_EQ(r.body["model"], "my-model");
    }
  }
}

TEST(BenchRun, AllRequestsRejectedIsAnErrorNamingTheReason) {
  MockBehavior behavior;
  behavior.status = 400;
  behavior.error_message = "prompt too long";
  MockOpenAIServer server(behavior);
  BenchOptions o = quiet_options(server);
  o.num_prompts = 3;
  o.random.input_len = 4;
  try {
    run_bench(o);
    FAIL() << "expected ds::Error";
  } catch (const ds::Error& e) {
    EXPECT_NE(std::string(e.what()).find("all 3 requests failed"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("HTTP 400: prompt too long"), std::string::npos) << e.what();
  }
  o.warmup = 1;
  try {
    run_bench(o);
    FAIL() << "expected ds::Error";
  } catch (const ds::Error& e) {
    EXPECT_NE(std::string(e.what()).find("warm-up request"), std::string::npos) << e.what();
  }
}

TEST(EvalGsm8k, GradesAgainstTheReferences) {
  // The mock answers the first question right, the second wrong, the third without a number, and the
  // fourth right but runs on into a new "Question:" (as a server that ignores `stop` would).
  const auto test = load_gsm8k(std::string(DS_SOURCE_DIR) + "/data/gsm8k/test.jsonl");
  std::map<std::string, std::string> replies = {
      {test[0].question, " She sells 9 eggs for $2 each.\n#### 18"},
      {test[1].question, " It takes 4 bolts.\n#### 4"},
      {test[2].question, " I do not know."},
      {test[3].question, " 3*3*60 = 540\n#### 540\n\nQuestion: What is 1+1?\nAnswer: 2"},
  };
  MockBehavior b;
  b.reply = [replies](const json& body) {
    const std::string prompt = body.contains("messages") ? body["messages"].back()["content"].get<std::string>()
                                                         : body["prompt"].get<std::string>();
    const size_t at = prompt.rfind("Question: ");
    std::string q = prompt.substr(at + 10);
    q = q.substr(0, q.find("\nAnswer:"));
    auto it = replies.find(q);
    return it == replies.end() ? std::string("??") : it->second;
  };
  MockOpenAIServer server(b);
  Gsm8kOptions o;
  o.base_url = server.base_url();
  o.data_dir = std::string(DS_SOURCE_DIR) + "/data/gsm8k";
  o.num_questions = 4;
  o.num_shots = 2;
  o.parallel = 2;
  o.progress = false;
  o.output = std::string(DS_BINARY_DIR) + "/gsm8k_results.jsonl";
  const Gsm8kResult res = run_gsm8k(o);
  EXPECT_EQ(res.summary.questions, 4);
  EXPECT_EQ(res.summary.correct, 2);
  EXPECT_EQ(res.summary.invalid, 1);
  EXPECT_EQ(res.summary.failed, 0);
  EXPECT_DOUBLE_EQ(res.summary.accuracy, 0.5);
  EXPECT_EQ(res.questions[3].extracted, "540");  // the run-on "2" was cut off
  // The request: greedy, stop at the next question, the 2-shot prompt ending in the question.
  const auto got = server.received();
  ASSERT_EQ(got.size(), 5u);
  const json& body = got[1].body;
  EXPECT_EQ(body["temperature"], 0.0);
  EXPECT_EQ(body["max_tokens"], 256);
  EXPECT_EQ(body["stop"], json::array({"Question:"}));
  EXPECT_EQ(body["stream"], false);
  const std::string prompt = body["prompt"];
  EXPECT_EQ(prompt.rfind("Question: ", 0), 0u);
  EXPECT_EQ(prompt.substr(prompt.size() - 8), "\nAnswer:");
  // Per-question JSONL.
  std::ifstream in(o.output);
  int lines = 0, correct = 0;
  for (std::string line; std::getline(in, line); ++lines) correct += json::parse(line)["correct"].get<bool>();
  EXPECT_EQ(lines, 4);
  EXPECT_EQ(correct, 2);

  // Chat mode: the shots become turns.
  o.chat = true;
  o.output.clear();
  const Gsm8kResult chat = run_gsm8k(o);
  EXPECT_EQ(chat.summary.correct, 2);
  EXPECT_EQ(server.received().back().body["messages"].size(), 2u * 2 + 1);
}

TEST(EvalGsm8k, UnreachableAndRejected) {
  Gsm8kOptions o;
  o.data_dir = std::string(DS_SOURCE_DIR) + "/data/gsm8k";
  o.num_questions = 2;
  o.progress = false;
  o.base_url = "http://127.0.0.1:" + std::to_string(closed_port());
  EXPECT_THROW(run_gsm8k(o), ds::Error);
  MockBehavior behavior;
  behavior.status = 500;
  behavior.error_message = "engine died";
  MockOpenAIServer server(behavior);
  o.base_url = server.base_url();
  try {
    run_gsm8k(o);
    FAIL() << "expected ds::Error";
  } catch (const ds::Error& e) {
    EXPECT_NE(std::string(e.what()).find("HTTP 500: engine died"), std::string::npos) << e.what();
  }
}

TEST(BenchRun, ManyConcurrentStreams) {
  MockBehavior behavior;
  behavior.token_delay_s = 0.001;
  MockOpenAIServer server(behavior);
  BenchOptions o = quiet_options(server);
  o.num_prompts = 300;
  o.random.input_len = 8;
  o.random.output_len = 10;
  o.random.range_ratio = 0.5;
  const BenchResult res = run_bench(o);  // all at once, no concurrency cap
  EXPECT_EQ(res.metrics.completed, 300);
  int64_t expected_out = 0;
  for (const auto& r : server.received())
    if (r.method == "POST") expected_out += r.body["max_tokens"].get<int64_t>();
  EXPECT_EQ(res.metrics.total_output, expected_out);
  EXPECT_GT(res.metrics.max_concurrent_requests, 1);
  expect_consistent(res.json, 300);
}
