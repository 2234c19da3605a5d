#include "bench/eval_gsm8k.h"

#include <boost/asio/io_context.hpp>
#include <cstdio>
#include <fstream>

#include "bench/http_client.h"
#include "bench/openai_api.h"
#include "bench/progress.h"
#include "bench/request.h"
#include "bench/task_runner.h"
#include "core/error.h"
#include "core/log.h"

namespace ds::bench {

using nlohmann::json;

namespace {

// Asks one question (non-streamed) and grades the answer.
boost::asio::awaitable<void> ask(HttpClient& client, const RequestOptions& ro, const BenchPrompt& prompt,
                                 GsmQuestionResult& r) {
  const std::string body = make_request_body(prompt, ro, /*stream=*/false).dump();
  HttpRequest req{"POST", ro.path, body, ro.api_key};
  const Clock::time_point start = Clock::now();
  BodySink no_sink;
  HttpResult res = co_await client.request(std::move(req), std::move(no_sink));
  r.latency_s = std::chrono::duration<double>(Clock::now() - start).count();
  if (!res.transport_error.empty()) {
    r.error = res.transport_error;
    co_return;
  }
  if (!res.ok()) {
    r.error = http_error_message(res.status, res.body);
    co_return;
  }
  Completion c = parse_completion(res.body, ro.type);
  if (!c.error.empty()) {
    r.error = c.error;
    co_return;
  }
  r.output = truncate_at_next_question(c.text);
  r.extracted = extract_last_number(r.output);
  r.correct = r.extracted && *r.extracted == r.reference;
  r.prompt_tokens = std::max<int64_t>(0, c.usage.prompt_tokens);
  r.completion_tokens = std::max<int64_t>(0, c.usage.completion_tokens);
}

}  // namespace

Gsm8kResult run_gsm8k(const Gsm8kOptions& o) {
  DS_CHECK(o.num_shots >= 0 && o.num_questions >= 0, "--num-shots and --num-questions must not be negative");
  DS_CHECK(o.max_tokens > 0 && o.parallel > 0, "--max-tokens and --parallel must be positive");
  const auto train = load_gsm8k(o.data_dir + "/train.jsonl");
  const auto test = load_gsm8k(o.data_dir + "/test.jsonl");
  DS_CHECK(o.num_shots <= static_cast<int64_t>(train.size()), "--num-shots {} exceeds the {} train examples",
           o.num_shots, train.size());
  const std::vector<GsmExample> shots(train.begin(), train.begin() + o.num_shots);
  const size_t n =
      o.num_questions > 0 ? std::min<size_t>(static_cast<size_t>(o.num_questions), test.size()) : test.size();

  const ServerAddress addr = parse_base_url(o.base_url);
  RequestOptions ro;
  ro.type = o.chat ? EndpointType::Chat : EndpointType::Completions;
  ro.path = endpoint_path(ro.type);
  ro.api_key = o.api_key;
  ro.temperature = 0.0;
  ro.extra_body = {{"stop", json::array({"Question:"})}};
  ro.model = resolve_model(addr, o.model, o.api_key, o.timeout_s);

  const std::string prefix = fewshot_prefix(shots);
  std::vector<BenchPrompt> prompts(n);
  Gsm8kResult result;
  result.questions.resize(n);
  for (size_t i = 0; i < n; ++i) {
    prompts[i].prompt =
        o.chat ? fewshot_messages(shots, test[i].question) : json(fewshot_prompt(prefix, test[i].question));
    prompts[i].max_tokens = o.max_tokens;
    auto& q = result.questions[i];
    q.index = static_cast<int64_t>(i);
    q.question = test[i].question;
    q.reference = reference_answer(test[i].answer);
  }
  spdlog::info("gsm8k: {} questions, {}-shot, against {}{} (model {}), {} in parallel", n, o.num_shots, addr.url(),
               ro.path, ro.model, o.parallel);

  boost::asio::io_context io;
  HttpClient client(io.get_executor(), addr, o.timeout_s);
  Progress progress("gsm8k", static_cast<int64_t>(n), o.progress);
  const Clock::time_point t0 = Clock::now();
  run_tasks(io, std::vector<double>(n, 0.0), o.parallel, [&](size_t i) -> boost::asio::awaitable<void> {
    co_await ask(client, ro, prompts[i], result.questions[i]);
    progress.advance(result.questions[i].error.empty());
  });
  const double duration = std::chrono::duration<double>(Clock::now() - t0).count();
  progress.finish();

  result.summary = summarize_gsm8k(result.questions, duration);
  std::fputs(format_gsm8k_summary(result.summary).c_str(), stdout);
  std::fflush(stdout);
  if (!o.output.empty()) {
    std::ofstream out(o.output);
    DS_CHECK(out.good(), "cannot write --output {}", o.output);
    for (const auto& q : result.questions)
      out << to_json(q).dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
    spdlog::info("wrote {}", o.output);
  }
  if (result.summary.failed > 0) {
    const auto& first = *std::find_if(result.questions.begin(), result.questions.end(),
                                      [](const GsmQuestionResult& q) { return !q.error.empty(); });
    if (result.summary.failed == result.summary.questions)
      fail("all {} requests failed; first error: {}", n, first.error);
    spdlog::warn("{} of {} requests failed; first error: {}", result.summary.failed, n, first.error);
  }
  return result;
}

}  // namespace ds::bench
