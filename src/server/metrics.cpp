#include "server/metrics.h"

#include <fmt/format.h>

#include <algorithm>

namespace ds::server {

namespace {
std::string number(double v) { return fmt::format("{}", v); }

void header(std::string* out, const std::string& name, const char* type, const char* help) {
  *out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}
// Prefix caching (docs/PREFIX_CACHE.md): vLLM's prefix_cache_queries / prefix_cache_hits (tokens), and
// the KDA snapshot pool, which vLLM does not have.
void render_prefix_cache(const EngineStats& e, std::string* out) {
  header(out, "deltaserve_prefix_cache_queries_total", "counter", "Prompt tokens looked up in the prefix cache.");
  *out += fmt::format("deltaserve_prefix_cache_queries_total {}\n", e.prefix_cache_queries);
  header(out, "deltaserve_prefix_cache_hits_total", "counter", "Prompt tokens served by the prefix cache.");
  *out += fmt::format("deltaserve_prefix_cache_hits_total {}\n", e.prefix_cache_hits);
  header(out, "deltaserve_prefix_snapshots", "gauge", "KDA state snapshots held by the prefix cache.");
  *out += fmt::format("deltaserve_prefix_snapshots {}\n", e.snapshots_used);
  header(out, "deltaserve_prefix_snapshot_capacity", "gauge", "Size of the KDA snapshot pool.");
  *out += fmt::format("deltaserve_prefix_snapshot_capacity {}\n", e.snapshots_capacity);
  header(out, "deltaserve_prefix_snapshot_usage_ratio", "gauge", "Fraction of the KDA snapshot pool in use.");
  *out += fmt::format("deltaserve_prefix_snapshot_usage_ratio {}\n",
                      number(e.snapshots_capacity ? double(e.snapshots_used) / e.snapshots_capacity : 0.0));
  header(out, "deltaserve_prefix_snapshot_saves_total", "counter", "KDA snapshots saved (and found finite).");
  *out += fmt::format("deltaserve_prefix_snapshot_saves_total {}\n", e.snapshots_saved);
  header(out, "deltaserve_prefix_snapshot_evictions_total", "counter", "KDA snapshots evicted (least recently used).");
  *out += fmt::format("deltaserve_prefix_snapshot_evictions_total {}\n", e.snapshot_evictions);
  header(out, "deltaserve_prefix_snapshot_nonfinite_total", "counter",
         "KDA snapshots dropped because they held a NaN or an infinity.");
  *out += fmt::format("deltaserve_prefix_snapshot_nonfinite_total {}\n", e.snapshots_nonfinite);
}

}  // namespace

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double v) {
  size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin();  // first bound >= v
  counts_[i]++;
  count_++;
  sum_ += v;
}

void Histogram::render(const std::string& name, std::string* out) const {
  uint64_t cum = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cum += counts_[i];
    *out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, number(bounds_[i]), cum);
  }
  *out += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n", name, count_);
  *out += fmt::format("{}_sum {}\n{}_count {}\n", name, number(sum_), name, count_);
}

ServerMetrics::ServerMetrics()
    : ttft_({0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
             80.0}),
      tpot_({0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75,
             1.0, 2.5}),
      e2e_({0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
            480.0}),
      prompt_len_(
          {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000, 200000, 500000, 1000000}),
      gen_len_({1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000}) {}

void ServerMetrics::record_http(const std::string& endpoint, int status) {
  std::lock_guard<std::mutex> lk(mu_);
  http_[{endpoint, status}]++;
}

void ServerMetrics::record_generation(const GenerationRecord& r) {
  std::lock_guard<std::mutex> lk(mu_);
  finished_[r.finish_reason]++;
  prompt_tokens_ += r.prompt_tokens;
  generation_tokens_ += r.generation_tokens;
  prompt_len_.observe(r.prompt_tokens);
  gen_len_.observe(r.generation_tokens);
  e2e_.observe(r.e2e_s);
  if (r.ttft_s >= 0) {
    ttft_.observe(r.ttft_s);
    if (r.generation_tokens > 1) tpot_.observe((r.e2e_s - r.ttft_s) / (r.generation_tokens - 1));
  }
}

std::string ServerMetrics::render(const EngineStats& e) const {
  std::lock_guard<std::mutex> lk(mu_);
  std::string out;
  header(&out, "deltaserve_http_requests_total", "counter", "HTTP requests answered, by endpoint and status code.");
  for (const auto& [k, n] : http_)
    out += fmt::format("deltaserve_http_requests_total{{endpoint=\"{}\",status=\"{}\"}} {}\n", k.first, k.second, n);
  header(&out, "deltaserve_prompt_tokens_total", "counter", "Prompt tokens of finished generations.");
  out += fmt::format("deltaserve_prompt_tokens_total {}\n", prompt_tokens_);
  header(&out, "deltaserve_generation_tokens_total", "counter", "Tokens generated by finished generations.");
  out += fmt::format("deltaserve_generation_tokens_total {}\n", generation_tokens_);
  header(&out, "deltaserve_request_finished_total", "counter",
         "Finished generations (one per choice), by finish reason.");
  for (const auto& [reason, n] : finished_)
    out += fmt::format("deltaserve_request_finished_total{{finished_reason=\"{}\"}} {}\n", reason, n);
  header(&out, "deltaserve_time_to_first_token_seconds", "histogram", "Time from request arrival to first token.");
  ttft_.render("deltaserve_time_to_first_token_seconds", &out);
  header(&out, "deltaserve_time_per_output_token_seconds", "histogram",
         "Mean time per output token after the first, per generation.");
  tpot_.render("deltaserve_time_per_output_token_seconds", &out);
  header(&out, "deltaserve_e2e_request_latency_seconds", "histogram", "Time from request arrival to its end.");
  e2e_.render("deltaserve_e2e_request_latency_seconds", &out);
  header(&out, "deltaserve_request_prompt_tokens", "histogram", "Prompt length of finished generations.");
  prompt_len_.render("deltaserve_request_prompt_tokens", &out);
  header(&out, "deltaserve_request_generation_tokens", "histogram", "Generated length of finished generations.");
  gen_len_.render("deltaserve_request_generation_tokens", &out);
  header(&out, "deltaserve_num_requests_running", "gauge", "Sequences in the running batch.");
  out += fmt::format("deltaserve_num_requests_running {}\n", e.running);
  header(&out, "deltaserve_num_requests_waiting", "gauge", "Sequences waiting to be scheduled.");
  out += fmt::format("deltaserve_num_requests_waiting {}\n", e.waiting);
  header(&out, "deltaserve_kv_cache_usage_ratio", "gauge", "Fraction of MLA latent-cache pages in use.");
  out += fmt::format("deltaserve_kv_cache_usage_ratio {}\n", number(e.kv_usage));
  header(&out, "deltaserve_state_cache_usage_ratio", "gauge", "Fraction of KDA state slots in use.");
  out += fmt::format("deltaserve_state_cache_usage_ratio {}\n", number(e.state_usage));
  header(&out, "deltaserve_num_preemptions_total", "counter", "Sequences preempted (recomputed later).");
  out += fmt::format("deltaserve_num_preemptions_total {}\n", e.num_preemptions);
  header(&out, "deltaserve_engine_prompt_tokens_total", "counter", "Prompt tokens the engine computed.");
  out += fmt::format("deltaserve_engine_prompt_tokens_total {}\n", e.prompt_tokens_total);
  header(&out, "deltaserve_engine_generation_tokens_total", "counter", "Tokens the engine sampled.");
  out += fmt::format("deltaserve_engine_generation_tokens_total {}\n", e.generation_tokens_total);
  header(&out, "deltaserve_engine_steps_total", "counter", "Engine steps (forward passes).");
  out += fmt::format("deltaserve_engine_steps_total {}\n", e.steps);
  render_prefix_cache(e, &out);
  return out;
}

int64_t ServerMetrics::http_count(const std::string& endpoint, int status) const {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = http_.find({endpoint, status});
  return it == http_.end() ? 0 : it->second;
}
int64_t ServerMetrics::generation_tokens() const {
  std::lock_guard<std::mutex> lk(mu_);
  return generation_tokens_;
}
int64_t ServerMetrics::prompt_tokens() const {
  std::lock_guard<std::mutex> lk(mu_);
  return prompt_tokens_;
}
int64_t ServerMetrics::finished(const std::string& reason) const {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = finished_.find(reason);
  return it == finished_.end() ? 0 : it->second;
}

}  // namespace ds::server
