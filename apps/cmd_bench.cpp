// `deltaserve bench` (serving load generator) and `deltaserve eval gsm8k` (accuracy), both clients of any
// OpenAI-compatible server; the work is in src/bench, this file only maps flags to options.
#include <cstdlib>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "apps/commands.h"
#include "apps/flag_checks.h"
#include "bench/bench.h"
#include "bench/eval_gsm8k.h"
#include "core/error.h"

namespace ds::cli {

namespace {

double parse_rate(const std::string& s) {
  if (s == "inf" || s == "Inf" || s == "INF") return std::numeric_limits<double>::infinity();
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  DS_CHECK(end != s.c_str() && *end == '\0' && v > 0, "--request-rate must be a positive number or inf, got '{}'", s);
  return v;
}

std::vector<double> parse_percentiles(const std::string& s) {
  std::vector<double> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');) {
    char* end = nullptr;
    const double v = std::strtod(item.c_str(), &end);
    DS_CHECK(end != item.c_str() && *end == '\0' && v >= 0 && v <= 100,
             "--metric-percentiles: '{}' is not a number in [0, 100]", item);
    out.push_back(v);
  }
  return out;
}

std::string base_url_from(const std::string& base_url, const std::string& host, int port, bool host_or_port_given) {
  if (!host_or_port_given) return base_url;
  return "http://" + host + ":" + std::to_string(port);
}

void register_bench(CLI::App& app) {
  auto* cmd = app.add_subcommand("bench", "Benchmark an OpenAI-compatible server (TTFT, TPOT, ITL, throughput)");
  auto o = std::make_shared<bench::BenchOptions>();
  struct Raw {
    std::string backend = "openai", endpoint_type, rate = "inf", percentiles = "95,99", host = "127.0.0.1";
    int port = 8000;
    bool ignore_eos = false, no_ignore_eos = false, no_progress = false;
  };
  auto raw = std::make_shared<Raw>();
  cmd->add_option("--base-url", o->base_url, "Server address, http://host:port (a trailing /v1 is fine)")
      ->capture_default_str();
  auto* host = cmd->add_option("--host", raw->host, "Server host (instead of --base-url)");
  auto* port = cmd->add_option("--port", raw->port, "Server port (instead of --base-url)")->check(in_range(1, 65535));
  cmd->add_option("--backend", raw->backend, "openai | openai-chat | vllm | sglang | deltaserve (API flavour)")
      ->capture_default_str();
  cmd->add_option("--endpoint-type", raw->endpoint_type, "completions | chat (overrides --backend)");
  cmd->add_option("--endpoint", o->endpoint, "Request path (default: /v1/completions or /v1/chat/completions)");
  cmd->add_option("--model", o->model, "Model name (default: the server's first model from GET /v1/models)");
  cmd->add_option("--api-key", o->api_key, "Bearer token")->envname("OPENAI_API_KEY");
  cmd->add_option("--dataset", o->dataset, "random | jsonl | fixed | shared-prefix | multi-turn")
      ->check(CLI::IsMember({"random", "jsonl", "fixed", "shared-prefix", "multi-turn"}))
      ->capture_default_str();
  cmd->add_option("--dataset-path", o->dataset_path, "JSONL file with a \"prompt\" or \"messages\" per line");
  cmd->add_option("--prompt", o->prompt, "The prompt text of --dataset fixed");
  cmd->add_option("--random-input-len", o->random.input_len, "Input tokens per random prompt")
      ->capture_default_str()
      ->check(in_range<int64_t>(1, 1 << 24));
  cmd->add_option("--random-output-len", o->random.output_len, "Output tokens per random prompt")
      ->capture_default_str()
      ->check(in_range<int64_t>(1, 1 << 24));
  cmd->add_option("--random-range-ratio", o->random.range_ratio,
                  "Lengths uniform in [len*(1-r), len*(1+r)], r in [0, 1)")
      ->capture_default_str()
      ->check(in_range(0.0, 0.999999));
  cmd->add_option("--vocab-size", o->random.vocab_size,
                  "Random prompt ids are drawn from [0, vocab-size); the default suits any vocabulary")
      ->capture_default_str()
      ->check(in_range<int64_t>(1, int64_t(1) << 31));
  // prefix-caching workloads (bench/dataset_prefix.h)
  const auto len = in_range<int64_t>(1, 1 << 24);
  cmd->add_option("--shared-prefix-groups", o->shared_prefix.groups, "shared-prefix: groups")
      ->capture_default_str()->check(len);
  cmd->add_option("--shared-prefix-prompts", o->shared_prefix.prompts_per_group, "shared-prefix: requests per group")
      ->capture_default_str()->check(len);
  cmd->add_option("--shared-prefix-len", o->shared_prefix.prefix_len, "shared-prefix: tokens of each group's prefix")
      ->capture_default_str()->check(in_range<int64_t>(0, 1 << 24));
  cmd->add_option("--shared-suffix-len", o->shared_prefix.suffix_len, "shared-prefix: tokens of each request's own suffix")
      ->capture_default_str()->check(len);
  cmd->add_option("--shared-output-len", o->shared_prefix.output_len, "shared-prefix: max_tokens")
      ->capture_default_str()->check(len);
  cmd->add_option("--multi-turn-conversations", o->multi_turn.conversations, "multi-turn: conversations")
      ->capture_default_str()->check(len);
  cmd->add_option("--multi-turn-turns", o->multi_turn.turns, "multi-turn: turns per conversation")
      ->capture_default_str()->check(len);
  cmd->add_option("--multi-turn-question-len", o->multi_turn.question_len, "multi-turn: tokens of each question")
      ->capture_default_str()->check(len);
  cmd->add_option("--multi-turn-first-len", o->multi_turn.first_len,
                  "multi-turn: tokens of the first question (0: --multi-turn-question-len), e.g. a long document")
      ->capture_default_str()->check(in_range<int64_t>(0, 1 << 24));
  cmd->add_option("--multi-turn-answer-len", o->multi_turn.answer_len,
                  "multi-turn: max_tokens, and the length of the stand-in answers sent back")
      ->capture_default_str()->check(len);
  cmd->add_option("--output-len", o->output_len, "max_tokens for jsonl lines without one and for fixed prompts")
      ->capture_default_str()
      ->check(in_range<int64_t>(1, 1 << 24));
  cmd->add_option("--num-prompts", o->num_prompts, "Requests to send (default: 1000; jsonl: every line)")
      ->check(in_range<int64_t>(0, int64_t(1) << 31));
  cmd->add_option("--max-concurrency", o->max_concurrency, "Most requests in flight (default: unlimited)")
      ->check(in_range<int64_t>(0, 1 << 20));
  cmd->add_option("--request-rate", raw->rate, "Requests per second, Poisson arrivals; inf: all at once")
      ->capture_default_str();
  cmd->add_option("--burstiness", o->burstiness, "Gamma shape of the arrival gaps (1: Poisson)")
      ->capture_default_str()
      ->check(in_range(1e-3, 1e3));
  cmd->add_option("--seed", o->seed, "Seed of the workload and the arrivals")->capture_default_str();
  cmd->add_option("--warmup", o->warmup, "Unmeasured warm-up requests sent first")
      ->capture_default_str()
      ->check(in_range<int64_t>(0, 1 << 20));
  cmd->add_flag("--ignore-eos", raw->ignore_eos, "Send ignore_eos (default for --dataset random)");
  cmd->add_flag("--no-ignore-eos", raw->no_ignore_eos, "Do not send ignore_eos, even for random prompts");
  cmd->add_option("--temperature", o->temperature, "Sampling temperature")->capture_default_str()->check(in_range(0.0, 2.0));
  cmd->add_option("--extra-body", o->extra_body, "JSON object merged into every request body");
  cmd->add_option("--metric-percentiles", raw->percentiles, "Comma-separated percentiles to report")
      ->capture_default_str();
  cmd->add_option("--output-json,--result-file", o->output_json, "Write the results (vLLM key names) here");
  cmd->add_option("--timeout", o->timeout_s, "Fail a request after this many seconds without data")
      ->capture_default_str()
      ->check(in_range(0.001, 86400.0 * 7));
  cmd->add_flag("--no-progress,--disable-tqdm", raw->no_progress, "No progress output");
  cmd->callback([o, raw, host, port] {
    o->base_url = base_url_from(o->base_url, raw->host, raw->port, host->count() + port->count() > 0);
    o->type = bench::parse_endpoint_type(raw->endpoint_type.empty() ? raw->backend : raw->endpoint_type);
    o->request_rate = parse_rate(raw->rate);
    o->percentiles = parse_percentiles(raw->percentiles);
    DS_CHECK(!(raw->ignore_eos && raw->no_ignore_eos), "--ignore-eos and --no-ignore-eos contradict each other");
    if (raw->ignore_eos) o->ignore_eos = true;
    if (raw->no_ignore_eos) o->ignore_eos = false;
    o->progress = !raw->no_progress;
    bench::run_bench(*o);
  });
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
