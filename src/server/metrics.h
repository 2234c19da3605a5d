// Prometheus metrics of the server (text exposition format 0.0.4), named as vLLM names them so a
// vLLM dashboard reads them: PREFIX + num_requests_running, time_to_first_token_seconds, ... with a
// `model_name` label. PREFIX is "deltaserve_" by default (promtool-clean names) and "vllm:" with
// --metrics-prefix vllm (vLLM's exact names; promtool's lint objects to the colon, as it does for vLLM's).
// Counters: prompt/generation tokens, finished requests by reason, preemptions, HTTP requests by
// endpoint and status. Histograms: TTFT, time per output token, inter-token latency, queue,
// prefill, decode, inference and end-to-end time, prompt and generation lengths. Gauges sampled
// at scrape time: running/waiting requests, KV and KDA-state cache usage; cache_config_info; and
// the standard process_* metrics. docs/SERVER.md lists them. Thread-safe.
#pragma once
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "engine/engine.h"

namespace ds::server {

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);  // ascending; +Inf is implicit
  void observe(double v, uint64_t times = 1);
  // `name`_bucket{labels,le=...}, `name`_sum{labels}, `name`_count{labels} lines; `labels` is
  // "" or `key="value",...` without braces.
  void render(const std::string& name, std::string* out, const std::string& labels = "") const;
  uint64_t count() const { return count_; }
  double sum() const { return sum_; }

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative
  uint64_t count_ = 0;
  double sum_ = 0;
};

// Timings and counts of one finished generation (one choice of one request). Times in seconds;
// < 0: not measured (no token produced, never scheduled).
struct GenerationRecord {
  int prompt_tokens = 0;
  int generation_tokens = 0;
  std::string finish_reason;  // stop, length, abort, error, tool_calls
  double ttft_s = -1;         // arrival to first token
  double e2e_s = 0;           // arrival to the end
  double queue_s = -1;        // arrival to first scheduled
  double prefill_s = -1;      // first scheduled to first token
  double decode_s = -1;       // first token to last token
};

struct MetricsOptions {
  std::string prefix = "deltaserve_";  // or "vllm:"
  std::string model_name;              // the `model_name` label ("" : no label)
  // cache_config_info's labels (block_size, num_gpu_blocks, ...), as vLLM reports its cache config.
  std::vector<std::pair<std::string, std::string>> cache_config;
};

class ServerMetrics {
 public:
  explicit ServerMetrics(MetricsOptions opts = {});
  void record_http(const std::string& endpoint, int status);
  void record_generation(const GenerationRecord& r);
  // `tokens` tokens arrived `gap_s` after the previous ones of the same generation: each counts
  // gap_s / tokens in the inter-token latency histogram.
  void record_inter_token(double gap_s, int tokens);
  std::string render(const EngineStats& engine) const;

  // For tests and logs.
  int64_t http_count(const std::string& endpoint, int status) const;
  int64_t generation_tokens() const;
  int64_t prompt_tokens() const;
  int64_t finished(const std::string& reason) const;
  const MetricsOptions& options() const { return opts_; }

 private:
  std::string labels(const std::string& extra = "") const;  // `extra,model_name="..."`

  MetricsOptions opts_;
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, int64_t> http_;
  std::map<std::string, int64_t> finished_;
  int64_t prompt_tokens_ = 0, generation_tokens_ = 0;
  Histogram ttft_, tpot_, itl_, e2e_, queue_, prefill_, decode_, inference_, prompt_len_, gen_len_;
};

// Prometheus label values: backslash, double quote and newline escaped.
std::string escape_label(const std::string& v);

}  // namespace ds::server
