// The benchmark's report: a text table in the style of vLLM `bench serve` / SGLang `bench_serving`, and a
// JSON document with vLLM's key names (duration, completed, total_output_tokens, mean_ttft_ms, p99_itl_ms,
// input_lens, itls, ...) plus a few of our own (input_throughput, max_*_ms, e2els, start_times).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench/stats.h"

namespace ds::bench {

// What was run, for the report's header and the JSON.
struct RunInfo {
  std::string endpoint_type;  // completions | chat
  std::string base_url, endpoint, model;
  std::string dataset;  // random | jsonl | fixed | ...
  int64_t num_prompts = 0;
  double request_rate = 0;  // inf: all at once
  double burstiness = 1.0;
  int64_t max_concurrency = 0;  // 0: unlimited
  uint64_t seed = 0;
  std::string backend = "openai";  // vLLM's --backend name, the JSON's "backend"
  // The latency sections the text report shows (ttft, tpot, itl, e2el, in that order); empty: all.
  std::vector<std::string> percentile_metrics{};
  std::string date{};  // YYYYMMDD-HHMMSS; "" = now (result_json)
};

std::string format_report(const BenchMetrics& m, const RunInfo& info);

nlohmann::json result_json(const BenchMetrics& m, const std::vector<RequestRecord>& records, const RunInfo& info);

// Checks a --percentile-metrics list ("ttft,tpot,itl,e2el", any subset) and splits it; throws ds::Error.
std::vector<std::string> parse_percentile_metrics(const std::string& list);

// The local time as YYYYMMDD-HHMMSS (vLLM's result "date").
std::string date_string();

// vLLM's default result file name: {label}-{rate}qps[-concurrency{N}]-{model's last path part}-{date}.json,
// the rate as Python prints a float ("inf", "4.0", "0.5").
std::string default_result_filename(const std::string& label, double request_rate, int64_t max_concurrency,
                                    const std::string& model, const std::string& date);

// "99" for 99, "99.9" for 99.9 (the pNN part of the JSON keys).
std::string percentile_label(double p);

}  // namespace ds::bench
