#include "bench/bench.h"

#include <boost/asio/io_context.hpp>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "bench/http_client.h"
#include "bench/progress.h"
#include "bench/report.h"
#include "bench/request.h"
#include "bench/task_runner.h"
#include "core/error.h"
#include "core/log.h"

namespace ds::bench {

using nlohmann::json;

namespace {

void validate(const BenchOptions& o) {
  DS_CHECK(o.request_rate > 0, "--request-rate must be positive (or inf), got {}", o.request_rate);
  DS_CHECK(o.burstiness > 0, "--burstiness must be positive, got {}", o.burstiness);
  DS_CHECK(o.num_prompts >= 0 && o.warmup >= 0 && o.max_concurrency >= 0,
           "--num-prompts, --warmup and --max-concurrency must not be negative");
  DS_CHECK(o.timeout_s >= 0, "--timeout must not be negative");
  for (double p : o.percentiles) DS_CHECK(p >= 0 && p <= 100, "percentile {} is outside [0, 100]", p);
  for (const auto& m : o.percentile_metrics) parse_percentile_metrics(m);  // one name each; throws on others
}

bool is_jsonl(const std::string& dataset) { return dataset == "jsonl" || dataset == "custom"; }

std::vector<BenchPrompt> build_dataset(const BenchOptions& o) {
  if (o.dataset == "random")
    return make_random_dataset(o.random, o.num_prompts > 0 ? o.num_prompts : 1000, o.type, o.seed);
  if (is_jsonl(o.dataset)) {
    DS_CHECK(!o.dataset_path.empty(), "--dataset {} needs --dataset-path FILE", o.dataset);
    return load_jsonl_dataset(o.dataset_path, o.num_prompts, o.type, o.output_len);
  }
  if (o.dataset == "fixed")
    return make_fixed_dataset(o.prompt, o.num_prompts > 0 ? o.num_prompts : 1000, o.type, o.output_len);
  if (o.dataset == "shared-prefix") {
    SharedPrefixOptions so = o.shared_prefix;
    so.vocab_size = o.random.vocab_size;
    return make_shared_prefix_dataset(so, o.type, o.seed);
  }
  if (o.dataset == "multi-turn") {
    MultiTurnOptions mo = o.multi_turn;
    mo.vocab_size = o.random.vocab_size;
    return make_multi_turn_dataset(mo, o.type, o.seed);
  }
  fail("unknown --dataset '{}' (expected random, sharegpt, jsonl (or custom), fixed, shared-prefix or multi-turn)",
       o.dataset);
}

// ShareGPT: the file is read first (its errors come before any request), then tokens are counted with
// --tokenizer or the server's /tokenize (which needs the model, so the server is asked for it here).
std::vector<BenchPrompt> build_sharegpt(const BenchOptions& o, const ServerAddress& addr, std::string* model) {
  DS_CHECK(!o.dataset_path.empty(),
           "--dataset sharegpt needs --dataset-path FILE.json (ShareGPT_V3_unfiltered_cleaned_split.json)");
  std::vector<ShareGptPair> pairs = load_sharegpt_pairs(o.dataset_path);
  *model = resolve_model(addr, o.model, o.api_key, o.timeout_s);
  const CountTokens count =
      o.tokenizer.empty() ? server_counter(addr, *model, o.api_key, o.timeout_s) : tokenizer_counter(o.tokenizer);
  spdlog::info("sharegpt: counting tokens with {}", o.tokenizer.empty() ? addr.url() + "/tokenize" : o.tokenizer);
  return sample_sharegpt(std::move(pairs), o.sharegpt, o.num_prompts > 0 ? o.num_prompts : 1000, o.type, o.seed, count,
                         o.dataset_path);
}

// Where the result goes: --output-json as given, else with --save-result vLLM's name in --result-dir.
std::string result_path(const BenchOptions& o, const std::string& model, const std::string& date) {
  if (!o.output_json.empty()) return o.output_json;
  if (!o.save_result) return "";
  std::string name = o.result_filename.empty() ? default_result_filename(o.label.empty() ? o.backend : o.label,
                                                                         o.request_rate, o.max_concurrency, model, date)
                                               : o.result_filename;
  if (o.result_dir.empty()) return name;
  std::error_code ec;
  std::filesystem::create_directories(o.result_dir, ec);
  DS_CHECK(!ec, "cannot create --result-dir {}: {}", o.result_dir, ec.message());
  return (std::filesystem::path(o.result_dir) / name).string();
}

// Sends prompts[i] for every arrival; fills one record per prompt.
std::vector<RequestRecord> run_phase(const ServerAddress& addr, const RequestOptions& ro,
                                     const std::vector<BenchPrompt>& prompts, const std::vector<double>& arrivals,
                                     const BenchOptions& o, const char* label, double* duration_s) {
  boost::asio::io_context io;
  HttpClient client(io.get_executor(), addr, o.timeout_s);
  std::vector<RequestRecord> records(prompts.size());
  Progress progress(label, static_cast<int64_t>(prompts.size()), o.progress);
  const Clock::time_point t0 = Clock::now();
  run_tasks(io, arrivals, o.max_concurrency, [&](size_t i) -> boost::asio::awaitable<void> {
    records[i] = co_await run_streaming_request(client, ro, prompts[i], t0);
    progress.advance(records[i].success);
  });
  if (duration_s) *duration_s = std::chrono::duration<double>(Clock::now() - t0).count();
  progress.finish();
  return records;
}

const RequestRecord* first_failure(const std::vector<RequestRecord>& records) {
  for (const auto& r : records)
    if (!r.success) return &r;
  return nullptr;
}

}  // namespace

BenchResult run_bench(const BenchOptions& o) {
  validate(o);
  const ServerAddress addr = parse_base_url(o.base_url);
  RequestOptions ro;
  ro.type = o.type;
  ro.path = o.endpoint.empty() ? endpoint_path(o.type) : o.endpoint;
  ro.api_key = o.api_key;
  ro.temperature = o.temperature;
  ro.ignore_eos =
      o.ignore_eos.value_or(o.dataset == "random" || o.dataset == "shared-prefix" || o.dataset == "multi-turn");
  if (!o.extra_body.empty()) {
    ro.extra_body = json::parse(o.extra_body, nullptr, false);
    DS_CHECK(ro.extra_body.is_object(), "--extra-body must be a JSON object, got: {}", o.extra_body);
  }
  std::vector<BenchPrompt> prompts;
  if (o.dataset == "sharegpt") {
    prompts = build_sharegpt(o, addr, &ro.model);
  } else {
    prompts = build_dataset(o);
    ro.model = resolve_model(addr, o.model, o.api_key, o.timeout_s);
  }
  spdlog::info("benchmark: {} {} prompts against {}{} (model {}), rate {}, max concurrency {}", prompts.size(),
               o.dataset, addr.url(), ro.path, ro.model, o.request_rate,
               o.max_concurrency > 0 ? std::to_string(o.max_concurrency) : "unlimited");

  if (o.warmup > 0) {
    // Random warm-up prompts are fresh ones (another seed), so a prefix cache cannot favour measured ones.
    std::vector<BenchPrompt> warm;
    if (o.dataset == "random") {
      warm = make_random_dataset(o.random, o.warmup, o.type, o.seed + 0x9e3779b97f4a7c15ULL);
    } else {
      for (int64_t i = 0; i < o.warmup; ++i) warm.push_back(prompts[static_cast<size_t>(i) % prompts.size()]);
    }
    auto records = run_phase(addr, ro, warm, std::vector<double>(warm.size(), 0.0), o, "warm-up", nullptr);
    if (const RequestRecord* f = first_failure(records))
      fail("warm-up request to {}{} failed: {}", addr.url(), ro.path, f->error);
  }

  BenchResult res;
  double duration = 0;
  res.records = run_phase(addr, ro, prompts, arrival_times(prompts.size(), o.request_rate, o.burstiness, o.seed), o,
                          "bench", &duration);
  res.metrics = compute_metrics(res.records, duration, o.percentiles);
  RunInfo info;
  info.endpoint_type = endpoint_type_name(o.type);
  info.base_url = addr.url();
  info.endpoint = ro.path;
  info.model = ro.model;
  info.dataset = o.dataset;
  info.num_prompts = static_cast<int64_t>(prompts.size());
  info.request_rate = o.request_rate;
  info.burstiness = o.burstiness;
  info.max_concurrency = o.max_concurrency;
  info.seed = o.seed;
  info.backend = o.backend;
  info.date = date_string();
  info.percentile_metrics = o.percentile_metrics;
  res.report = format_report(res.metrics, info);
  res.json = result_json(res.metrics, res.records, info);
  std::fputs(res.report.c_str(), stdout);
  std::fflush(stdout);
  res.result_file = result_path(o, ro.model, info.date);
  if (!res.result_file.empty()) {
    std::ofstream out(res.result_file);
    DS_CHECK(out.good(), "cannot write the result file {}", res.result_file);
    out << res.json.dump(2, ' ', false, json::error_handler_t::replace) << "\n";
    spdlog::info("wrote {}", res.result_file);
  }
  if (ro.ignore_eos) {
    int64_t short_outputs = 0;
    for (size_t i = 0; i < prompts.size(); ++i)
      if (res.records[i].success && res.records[i].output_len != prompts[i].max_tokens) ++short_outputs;
    if (short_outputs)
      spdlog::warn("{} requests produced a different number of tokens than max_tokens despite ignore_eos",
                   short_outputs);
  }
  if (const RequestRecord* f = first_failure(res.records)) {
    if (res.metrics.completed == 0) fail("all {} requests failed; first error: {}", res.records.size(), f->error);
    spdlog::warn("{} of {} requests failed; first error: {}", res.metrics.failed, res.records.size(), f->error);
  }
  return res;
}

}  // namespace ds::bench
