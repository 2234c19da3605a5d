// Prometheus metrics of the server (text exposition format 0.0.4): HTTP requests by endpoint and
// status code, prompt/generation token counters, finished generations by reason, latency
// histograms (TTFT, TPOT, end-to-end), and the engine's gauges (running/waiting requests, KV and
// KDA-state pool usage, preemptions) sampled at scrape time. Thread-safe.
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
  void observe(double v);
  // `name`_bucket{le=...}, `name`_sum, `name`_count lines.
  void render(const std::string& name, std::string* out) const;
  uint64_t count() const { return count_; }
  double sum() const { return sum_; }

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative
  uint64_t count_ = 0;
  double sum_ = 0;
};

// Timings and counts of one finished generation (one choice of one request).
struct GenerationRecord {
  int prompt_tokens = 0;
  int generation_tokens = 0;
  std::string finish_reason;  // stop, length, abort, error, tool_calls
  double ttft_s = -1;         // < 0: no token was produced
  double e2e_s = 0;
};

class ServerMetrics {
 public:
  ServerMetrics();
  void record_http(const std::string& endpoint, int status);
  void record_generation(const GenerationRecord& r);
  std::string render(const EngineStats& engine) const;

  // For tests and logs.
  int64_t http_count(const std::string& endpoint, int status) const;
  int64_t generation_tokens() const;
  int64_t prompt_tokens() const;
  int64_t finished(const std::string& reason) const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, int64_t> http_;
  std::map<std::string, int64_t> finished_;
  int64_t prompt_tokens_ = 0, generation_tokens_ = 0;
  Histogram ttft_, tpot_, e2e_, prompt_len_, gen_len_;
};

}  // namespace ds::server
