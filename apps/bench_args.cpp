#include "apps/bench_args.h"

#include <cstdlib>
#include <limits>
#include <sstream>
#include <vector>

#include "apps/flag_checks.h"
#include "bench/report.h"
#include "core/error.h"
#include "core/log.h"

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

}  // namespace

void add_bench_options(CLI::App& cmd_ref, BenchArgs& a) {
  CLI::App* cmd = &cmd_ref;
  bench::BenchOptions* o = &a.o;
  cmd->add_option("--base-url", o->base_url, "Server address, http://host:port (a trailing /v1 is fine)")
      ->capture_default_str();
  cmd->add_option("--host", a.host, "Server host (instead of --base-url; default 127.0.0.1)");
  cmd->add_option("--port", a.port, "Server port (instead of --base-url; default 8000)")->check(in_range(1, 65535));
  cmd->add_option("--backend", a.backend,
                  "openai | openai-chat | vllm | sglang | deltaserve (API flavour; default openai)");
  cmd->add_option("--endpoint-type", a.endpoint_type, "completions | chat (overrides --backend)");
  cmd->add_option("--endpoint", o->endpoint, "Request path (default: /v1/completions or /v1/chat/completions)");
  cmd->add_option("--model", o->model, "Model name (default: the server's first model from GET /v1/models)");
  cmd->add_option("--api-key", o->api_key, "Bearer token")->envname("OPENAI_API_KEY");
  cmd->add_option("--dataset,--dataset-name", o->dataset,
                  "random | sharegpt | jsonl (vLLM's custom) | fixed | shared-prefix | multi-turn")
      ->check(CLI::IsMember({"random", "sharegpt", "custom", "jsonl", "fixed", "shared-prefix", "multi-turn"}))
      ->capture_default_str();
  cmd->add_option("--dataset-path", o->dataset_path,
                  "sharegpt: the ShareGPT JSON file; jsonl/custom: a \"prompt\" or \"messages\" per line");
  cmd->add_option("--tokenizer", o->tokenizer,
                  "sharegpt: count tokens with this deltaserve tokenizer dir (default: the server's POST /tokenize)");
  cmd->add_option("--sharegpt-output-len", a.sharegpt_output_len,
                  "sharegpt: max_tokens of every request (default: the second turn's token count)")
      ->check(in_range<int64_t>(1, 1 << 24));
  cmd->add_flag("--disable-shuffle", a.disable_shuffle, "sharegpt: take conversations in file order");
  cmd->add_flag("--no-oversample", a.no_oversample,
                "sharegpt: send only the valid pairs found when fewer than --num-prompts");
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
      ->capture_default_str()
      ->check(len);
  cmd->add_option("--shared-prefix-prompts", o->shared_prefix.prompts_per_group, "shared-prefix: requests per group")
      ->capture_default_str()
      ->check(len);
  cmd->add_option("--shared-prefix-len", o->shared_prefix.prefix_len, "shared-prefix: tokens of each group's prefix")
      ->capture_default_str()
      ->check(in_range<int64_t>(0, 1 << 24));
  cmd->add_option("--shared-suffix-len", o->shared_prefix.suffix_len,
                  "shared-prefix: tokens of each request's own suffix")
      ->capture_default_str()
      ->check(len);
  cmd->add_option("--shared-output-len", o->shared_prefix.output_len, "shared-prefix: max_tokens")
      ->capture_default_str()
      ->check(len);
  cmd->add_option("--multi-turn-conversations", o->multi_turn.conversations, "multi-turn: conversations")
      ->capture_default_str()
      ->check(len);
  cmd->add_option("--multi-turn-turns", o->multi_turn.turns, "multi-turn: turns per conversation")
      ->capture_default_str()
      ->check(len);
  cmd->add_option("--multi-turn-question-len", o->multi_turn.question_len, "multi-turn: tokens of each question")
      ->capture_default_str()
      ->check(len);
  cmd->add_option("--multi-turn-first-len", o->multi_turn.first_len,
                  "multi-turn: tokens of the first question (0: --multi-turn-question-len), e.g. a long document")
      ->capture_default_str()
      ->check(in_range<int64_t>(0, 1 << 24));
  cmd->add_option("--multi-turn-answer-len", o->multi_turn.answer_len,
                  "multi-turn: max_tokens, and the length of the stand-in answers sent back")
      ->capture_default_str()
      ->check(len);
  cmd->add_option("--output-len,--custom-output-len", a.output_len,
                  "max_tokens for jsonl lines without one and for fixed prompts (default 128); sharegpt: as "
                  "--sharegpt-output-len")
      ->check(in_range<int64_t>(1, 1 << 24));
  cmd->add_option("--num-prompts", o->num_prompts, "Requests to send (default: 1000; jsonl: every line)")
      ->check(in_range<int64_t>(0, int64_t(1) << 31));
  cmd->add_option("--max-concurrency", o->max_concurrency, "Most requests in flight (default: unlimited)")
      ->check(in_range<int64_t>(0, 1 << 20));
  cmd->add_option("--request-rate", a.rate, "Requests per second, Poisson arrivals; inf: all at once")
      ->capture_default_str();
  cmd->add_option("--burstiness", o->burstiness, "Gamma shape of the arrival gaps (1: Poisson)")
      ->capture_default_str()
      ->check(in_range(1e-3, 1e3));
  cmd->add_option("--seed", o->seed, "Seed of the workload, the ShareGPT shuffle and the arrivals")
      ->capture_default_str();
  cmd->add_option("--warmup,--num-warmups", o->warmup, "Unmeasured warm-up requests sent first")
      ->capture_default_str()
      ->check(in_range<int64_t>(0, 1 << 20));
  cmd->add_flag("--ignore-eos", a.ignore_eos, "Send ignore_eos (default for --dataset random)");
  cmd->add_flag("--no-ignore-eos", a.no_ignore_eos, "Do not send ignore_eos, even for random prompts");
  cmd->add_option("--temperature", o->temperature, "Sampling temperature")
      ->capture_default_str()
      ->check(in_range(0.0, 2.0));
  cmd->add_option("--extra-body", o->extra_body, "JSON object merged into every request body");
  cmd->add_option("--metric-percentiles", a.percentiles, "Comma-separated percentiles to report")
      ->capture_default_str();
  cmd->add_option(
      "--percentile-metrics", a.percentile_metrics,
      "Latency sections the report shows, of ttft,tpot,itl,e2el (default: all four; vLLM's: ttft,tpot,itl)");
  cmd->add_option("--output-json,--result-file", o->output_json, "Write the results (vLLM key names) here");
  cmd->add_flag("--save-result", o->save_result,
                "Write the results to --result-dir/--result-filename (vLLM's default name when not given)");
  cmd->add_option("--result-dir", o->result_dir, "Folder of the --save-result file (created when missing)");
  cmd->add_option("--result-filename", o->result_filename,
                  "Name of the --save-result file (default {label}-{rate}qps[-concurrency{N}]-{model}-{date}.json)");
  cmd->add_option("--label", o->label, "First part of the default result file name (default: --backend)");
  cmd->add_flag("--save-detailed", a.save_detailed, "Accepted for vLLM: the result always has the per-request lists");
  cmd->add_option("--timeout", o->timeout_s, "Fail a request after this many seconds without data")
      ->capture_default_str()
      ->check(in_range(0.001, 86400.0 * 7));
  cmd->add_flag("--no-progress,--disable-tqdm", a.no_progress, "No progress output");
}

bench::BenchOptions bench_options(const BenchArgs& a) {
  bench::BenchOptions o = a.o;
  if (!a.host.empty() || a.port != 0)
    o.base_url = "http://" + (a.host.empty() ? std::string("127.0.0.1") : a.host) + ":" +
                 std::to_string(a.port != 0 ? a.port : 8000);
  o.type = bench::parse_endpoint_type(!a.endpoint_type.empty() ? a.endpoint_type
                                      : !a.backend.empty()     ? a.backend
                                                               : std::string("openai"));
  o.backend = !a.backend.empty() ? a.backend : o.type == bench::EndpointType::Chat ? "openai-chat" : "openai";
  o.request_rate = parse_rate(a.rate);
  o.percentiles = parse_percentiles(a.percentiles);
  if (!a.percentile_metrics.empty()) o.percentile_metrics = bench::parse_percentile_metrics(a.percentile_metrics);
  DS_CHECK(!(a.ignore_eos && a.no_ignore_eos), "--ignore-eos and --no-ignore-eos contradict each other");
  if (a.ignore_eos) o.ignore_eos = true;
  if (a.no_ignore_eos) o.ignore_eos = false;
  o.progress = !a.no_progress;
  o.output_len = a.output_len > 0 ? a.output_len : 128;
  // vLLM's --output-len also sets --sharegpt-output-len; the explicit one wins.
  o.sharegpt.output_len = a.sharegpt_output_len > 0 ? a.sharegpt_output_len : a.output_len;
  o.sharegpt.shuffle = !a.disable_shuffle;
  o.sharegpt.oversample = !a.no_oversample;
  if (!o.save_result && o.output_json.empty() && (!o.result_dir.empty() || !o.result_filename.empty()))
    spdlog::warn("--result-dir and --result-filename take effect with --save-result (as in vLLM); no file is written");
  return o;
}

}  // namespace ds::cli
