// `deltaserve bench` (serving load generator) and `deltaserve eval gsm8k` (accuracy), both clients of any
// OpenAI-compatible server; the work is in src/bench, this file only maps flags to options (bench's are in
// apps/bench_args.cpp).
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "apps/bench_args.h"
#include "apps/commands.h"
#include "apps/flag_checks.h"
#include "bench/bench.h"
#include "bench/eval_gsm8k.h"
#include "core/error.h"

namespace ds::cli {

namespace {

std::string base_url_from(const std::string& base_url, const std::string& host, int port, bool host_or_port_given) {
  if (!host_or_port_given) return base_url;
  return "http://" + host + ":" + std::to_string(port);
}

void register_bench(CLI::App& app) {
  auto* cmd = app.add_subcommand("bench", "Benchmark an OpenAI-compatible server (TTFT, TPOT, ITL, throughput)");
  auto a = std::make_shared<BenchArgs>();
  add_bench_options(*cmd, *a);
  cmd->callback([a] { bench::run_bench(bench_options(*a)); });
}

void register_eval(CLI::App& app) {
  auto* eval = app.add_subcommand("eval", "Evaluate a model served over the OpenAI API");
  eval->require_subcommand(1);
  auto* cmd = eval->add_subcommand("gsm8k", "Few-shot GSM8K accuracy (greedy, last number of the answer)");
  auto o = std::make_shared<bench::Gsm8kOptions>();
  struct Raw {
    std::string host = "127.0.0.1";
    int port = 8000;
    bool no_progress = false;
  };
  auto raw = std::make_shared<Raw>();
  cmd->add_option("--base-url", o->base_url, "Server address, http://host:port")->capture_default_str();
  auto* host = cmd->add_option("--host", raw->host, "Server host (instead of --base-url)");
  auto* port = cmd->add_option("--port", raw->port, "Server port (instead of --base-url)")->check(in_range(1, 65535));
  cmd->add_option("--model", o->model, "Model name (default: the server's first model)");
  cmd->add_option("--api-key", o->api_key, "Bearer token")->envname("OPENAI_API_KEY");
  cmd->add_option("--data-dir", o->data_dir, "Folder with GSM8K train.jsonl and test.jsonl")->capture_default_str();
  cmd->add_option("--num-shots", o->num_shots, "Few-shot examples from the train split")
      ->capture_default_str()
      ->check(in_range<int64_t>(0, 1000));
  cmd->add_option("--num-questions", o->num_questions, "Test questions to ask (default: all 1319)")
      ->check(in_range<int64_t>(0, 1 << 24));
  cmd->add_option("--max-tokens", o->max_tokens, "Output tokens per answer")->capture_default_str()->check(in_range<int64_t>(1, 1 << 24));
  cmd->add_option("--parallel", o->parallel, "Requests in flight")->capture_default_str()->check(in_range<int64_t>(1, 1 << 16));
  cmd->add_flag("--chat", o->chat, "Use /v1/chat/completions (shots as turns) instead of /v1/completions");
  cmd->add_option("--output", o->output, "Write per-question results here (JSONL)");
  cmd->add_option("--timeout", o->timeout_s, "Fail a request after this many seconds without data")
      ->capture_default_str()
      ->check(in_range(0.001, 86400.0 * 7));
  cmd->add_flag("--no-progress", raw->no_progress, "No progress output");
  cmd->callback([o, raw, host, port] {
    o->base_url = base_url_from(o->base_url, raw->host, raw->port, host->count() + port->count() > 0);
    o->progress = !raw->no_progress;
    bench::run_gsm8k(*o);
  });
}

}  // namespace

void register_bench_commands(CLI::App& app) {
  register_bench(app);
  register_eval(app);
}

}  // namespace ds::cli
