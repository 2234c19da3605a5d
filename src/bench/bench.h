// `deltaserve bench`: a load generator for any OpenAI-compatible server. run_bench() checks the server
// (GET /v1/models, which also names the default model), builds the workload, sends the warm-up requests,
// then the measured ones at the configured rate and concurrency, and reports (stats.h, report.h).
#pragma once
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "bench/dataset.h"
#include "bench/dataset_prefix.h"
#include "bench/dataset_sharegpt.h"
#include "bench/openai_api.h"
#include "bench/stats.h"

namespace ds::bench {

struct BenchOptions {
  std::string base_url = "http://127.0.0.1:8000";
  EndpointType type = EndpointType::Completions;
  std::string endpoint;  // path override; "" = the type's (/v1/completions or /v1/chat/completions)
  std::string model;     // "" = the server's first model
  std::string api_key;
  // random | jsonl | fixed | shared-prefix | multi-turn | sharegpt; "custom" (vLLM's name) is jsonl
  std::string dataset = "random";
  std::string dataset_path;  // jsonl, sharegpt
  std::string prompt;        // fixed
  RandomDatasetOptions random;
  SharedPrefixOptions shared_prefix;
  MultiTurnOptions multi_turn;
  ShareGptOptions sharegpt;
  std::string tokenizer;  // sharegpt: count tokens with deltaserve's tokenizer from this dir ("" = POST /tokenize)
  int64_t output_len = 128;     // max_tokens for jsonl lines without one, and for fixed prompts
  int64_t num_prompts = 0;      // 0: 1000 (random, fixed, sharegpt) or every line (jsonl)
  int64_t max_concurrency = 0;  // 0: unlimited
  double request_rate = std::numeric_limits<double>::infinity();
  double burstiness = 1.0;
  uint64_t seed = 0;
  int64_t warmup = 1;              // warm-up requests (the first prompts), not measured
  std::optional<bool> ignore_eos;  // unset: on for random prompts, off otherwise
  double temperature = 0.0;
  std::string extra_body;  // JSON object merged into every request body
  std::vector<double> percentiles = {95, 99};
  // Metrics whose summaries the text report shows (ttft, tpot, itl, e2el); empty: all four. The JSON has all.
  std::vector<std::string> percentile_metrics;
  std::string output_json;  // write the result here when set
  // vLLM's --save-result: write the result to result_dir/result_filename (default: default_result_filename()
  // in report.h) unless output_json is set. label: the default name's first part ("" = the backend).
  bool save_result = false;
  std::string result_dir, result_filename, label;
  std::string backend = "openai";  // the --backend given (for the JSON and the file name)
  double timeout_s = 600;   // a request fails when the server is silent this long
  bool progress = true;
};

struct BenchResult {
  BenchMetrics metrics;
  std::vector<RequestRecord> records;
  nlohmann::json json;
  std::string report;
  std::string result_file;  // where the JSON was written ("" = nowhere)
};

// Prints progress to stderr and the report to stdout. Throws ds::Error when the server cannot be reached,
// the warm-up fails, or every measured request failed (after printing and writing the report).
BenchResult run_bench(const BenchOptions& o);

}  // namespace ds::bench
