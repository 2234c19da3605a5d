// OpenAI batch files in process (server/batch_file.h, `deltaserve run-batch`) over the fake engine: each
// request line answered as the HTTP server answers the same request, bad lines reported with the line and the
// rest run, outputs in input order whatever order they finish in, a full engine queue waited out.
#include <gtest/gtest.h>

#include <sstream>

#include "server/batch_file.h"
#include "server_fixture.h"

namespace ds::test {
namespace {

struct BatchFixture : ServerFixture {
  BatchFixture() {
    opts.model_names = {"tiny", "tiny-alias"};
    opts.model_root = "tests/fixtures/tiny/model";
    ctx = server::make_serving_context(opts, engine, tok, metrics, unknown);
  }
  // run_batch over `lines`: the output lines, parsed
  std::vector<json> run(const std::vector<std::string>& lines, int concurrency, server::BatchProgress* tally = nullptr,
                        int* progress_calls = nullptr) {
    std::ostringstream out;
    server::BatchOptions o;
    o.concurrency = concurrency;
    o.progress_interval_s = 0.01;
    o.on_progress = [&](const server::BatchProgress&) {
      if (progress_calls) ++*progress_calls;
    };
    const server::BatchProgress p = server::run_batch(ctx, lines, out, o);
    if (tally) *tally = p;
    std::vector<json> got;
    std::istringstream in(out.str());
    for (std::string l; std::getline(in, l);) got.push_back(json::parse(l));
    return got;
  }

  server::ServerOptions opts;
  server::ServerMetrics metrics{opts.metrics};
  server::UnknownFieldPolicy unknown{false};
  server::ServingContext ctx;
};

std::string line(const std::string& id, const std::string& url, const json& body) {
  return json{{"custom_id", id}, {"method", "POST"}, {"url", url}, {"body", body}}.dump();
}

TEST(BatchFile, RequestLinesAnswerAsTheServerDoes) {
  BatchFixture f;
  const json chat = {{"model", "tiny"}, {"messages", {{{"role", "user"}, {"content", "hello there"}}}},
                     {"max_tokens", 6}, {"seed", 11}};
  const json comp = {{"model", "tiny-alias"}, {"prompt", "once upon"}, {"max_tokens", 5}, {"seed", 12}};
  const json resp = {{"model", "tiny"}, {"input", "a question"}, {"max_output_tokens", 4}, {"seed", 13}};
  server::BatchProgress tally;
  const auto got = f.run({line("c1", "/v1/chat/completions", chat), "", "  ", line("c2", "/v1/completions", comp),
                          line("c3", "/v1/responses", resp)},
                         2, &tally);
  ASSERT_EQ(got.size(), 3u);  // (blank lines skipped)
  const char* ids[] = {"c1", "c2", "c3"};
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(got[i]["custom_id"], ids[i]);
    EXPECT_EQ(got[i]["id"].get<std::string>().rfind("batch_req_", 0), 0u);
    EXPECT_TRUE(got[i]["error"].is_null());
    ASSERT_EQ(got[i]["response"]["status_code"], 200) << got[i].dump();
    EXPECT_EQ(got[i]["response"]["request_id"], got[i]["response"]["body"]["id"]);
  }
  const json b1 = got[0]["response"]["body"], b2 = got[1]["response"]["body"], b3 = got[2]["response"]["body"];
  // the same requests over HTTP
  const json h1 = json::parse(f.post("/v1/chat/completions", chat).body);
  const json h2 = json::parse(f.post("/v1/completions", comp).body);
  const json h3 = json::parse(f.post("/v1/responses", resp).body);
  EXPECT_EQ(b1["object"], "chat.completion");
  EXPECT_EQ(b1["choices"], h1["choices"]);
  EXPECT_EQ(b1["usage"], h1["usage"]);
  EXPECT_EQ(b2["model"], "tiny-alias");
  EXPECT_EQ(b2["choices"], h2["choices"]);
  EXPECT_EQ(b2["usage"], h2["usage"]);
  EXPECT_EQ(b3["object"], "response");
  EXPECT_EQ(b3["output"][0]["content"], h3["output"][0]["content"]);
  EXPECT_EQ(b3["usage"], h3["usage"]);
  EXPECT_EQ(tally.total, 3);
  EXPECT_EQ(tally.done, 3);
  EXPECT_EQ(tally.failed, 0);
  EXPECT_EQ(tally.completion_tokens, 6 + 5 + 4);
  EXPECT_EQ(tally.prompt_tokens, b1["usage"]["prompt_tokens"].get<int64_t>() + b2["usage"]["prompt_tokens"].get<int64_t>() +
                                     b3["usage"]["input_tokens"].get<int64_t>());
}

TEST(BatchFile, BadLinesAreReportedByLineAndTheRestRun) {
  BatchFixture f;
  const json chat = {{"model", "tiny"}, {"messages", {{{"role", "user"}, {"content", "hi"}}}}, {"max_tokens", 3}};
  json streamed = chat, other_model = chat;
  streamed["stream"] = true;
  other_model["model"] = "gpt-4o";
  const std::vector<std::string> lines = {
      "{not json",                                                                              // 1
      "[1, 2]",                                                                                 // 2
      json{{"method", "POST"}, {"url", "/v1/chat/completions"}, {"body", chat}}.dump(),        // 3: no custom_id
      line("x", "/v1/chat/completions", chat),                                                  // 4
      line("x", "/v1/chat/completions", chat),                                                  // 5: x again
      json{{"custom_id", "g"}, {"method", "GET"}, {"url", "/v1/chat/completions"}, {"body", chat}}.dump(),  // 6
      line("e", "/v1/embeddings", {{"input", "x"}}),                                            // 7
      json{{"custom_id", "b"}, {"method", "POST"}, {"url", "/v1/completions"}, {"body", "text"}}.dump(),  // 8
      line("s", "/v1/chat/completions", streamed),                                              // 9
      line("m", "/v1/chat/completions", other_model),                                           // 10
      line("y", "/v1/chat/completions", chat),                                                  // 11
  };
  server::BatchProgress tally;
  const auto got = f.run(lines, 4, &tally);
  ASSERT_EQ(got.size(), lines.size());
  const std::vector<std::pair<int, std::string>> line_errors = {
      {1, "invalid_json"},        {2, "invalid_request"}, {3, "invalid_custom_id"}, {5, "duplicate_custom_id"},
      {6, "invalid_method"},      {7, "invalid_url"},     {8, "invalid_body"}};
  for (const auto& [n, code] : line_errors) {
    const json& o = got[size_t(n - 1)];
    EXPECT_TRUE(o["response"].is_null()) << n;
    EXPECT_EQ(o["error"]["code"], code) << o.dump();
    EXPECT_EQ(o["error"]["line"], n);
    EXPECT_NE(o["error"]["message"].get<std::string>().find("line " + std::to_string(n)), std::string::npos) << o.dump();
  }
  EXPECT_NE(got[4]["error"]["message"].get<std::string>().find("line 4"), std::string::npos);  // the first x
  EXPECT_EQ(got[4]["custom_id"], "x");
  EXPECT_TRUE(got[0]["custom_id"].is_null());
  // an endpoint's error: its status and error object as the response, as OpenAI's batch output has it
  EXPECT_EQ(got[8]["response"]["status_code"], 400);
  EXPECT_EQ(got[8]["response"]["body"]["error"]["param"], "stream");
  EXPECT_EQ(got[9]["response"]["status_code"], 404);
  EXPECT_TRUE(got[9]["error"].is_null());
  for (int n : {4, 11}) EXPECT_EQ(got[size_t(n - 1)]["response"]["status_code"], 200) << n;
  EXPECT_EQ(tally.done, 11);
  EXPECT_EQ(tally.failed, 9);
  EXPECT_EQ(f.engine.submitted_copy().size(), 2u);  // only lines 4 and 11 reached the engine
}

TEST(BatchFile, OutputsKeepTheInputOrderAndAFullQueueIsWaitedOut) {
  BatchFixture f;
  f.engine.delay = std::chrono::milliseconds(2);
  f.engine.max_live = 2;  // beyond: 429, which the batch waits out
  std::vector<std::string> lines;
  for (int i = 0; i < 12; ++i)  // the early lines the longest: they finish last
    lines.push_back(line("r" + std::to_string(i), "/v1/completions",
                         {{"model", "tiny"}, {"prompt", "p " + std::to_string(i)}, {"max_tokens", 24 - 2 * i}, {"seed", i}}));
  server::BatchProgress tally;
  int calls = 0;
  const auto got = f.run(lines, 6, &tally, &calls);
  ASSERT_EQ(got.size(), lines.size());
  for (int i = 0; i < 12; ++i) {
    EXPECT_EQ(got[size_t(i)]["custom_id"], "r" + std::to_string(i));
    ASSERT_EQ(got[size_t(i)]["response"]["status_code"], 200) << got[size_t(i)].dump();
    EXPECT_EQ(got[size_t(i)]["response"]["body"]["usage"]["completion_tokens"], 24 - 2 * i);
  }
  EXPECT_EQ(tally.failed, 0);
  EXPECT_EQ(tally.completion_tokens, 24 * 12 - 2 * 66);
  EXPECT_GE(calls, 1);  // (at least the final report)
}

}  // namespace
}  // namespace ds::test
