#include "server/metrics.h"

#include <fmt/format.h>

#include <algorithm>

#include "server/process_metrics.h"

namespace ds::server {

namespace {
std::string number(double v) { return fmt::format("{}", v); }

void header(std::string* out, const std::string& name, const char* type, const char* help) {
  *out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

std::string braces(const std::string& labels) { return labels.empty() ? "" : "{" + labels + "}"; }

const std::vector<double> kLatencyBuckets = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5,
                                             0.75,  1.0,   2.5,  5.0,  7.5,  10.0, 20.0, 40.0, 80.0};
const std::vector<double> kTokenGapBuckets = {0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05,
                                              0.075, 0.1,    0.15,  0.2,    0.3,  0.5,   0.75, 1.0,  2.5};
const std::vector<double> kRequestBuckets = {0.01, 0.025, 0.05, 0.1,  0.25, 0.5,  1.0,  2.5,   5.0,   10.0,
                                             15.0, 20.0,  30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0};
}  // namespace

std::string escape_label(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double v, uint64_t times) {
  size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin();  // first bound >= v
  counts_[i] += times;
  count_ += times;
  sum_ += v * double(times);
}

void Histogram::render(const std::string& name, std::string* out, const std::string& labels) const {
  const std::string sep = labels.empty() ? "" : labels + ",";
  uint64_t cum = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cum += counts_[i];
    *out += fmt::format("{}_bucket{{{}le=\"{}\"}} {}\n", name, sep, number(bounds_[i]), cum);
  }
  *out += fmt::format("{}_bucket{{{}le=\"+Inf\"}} {}\n", name, sep, count_);
  *out += fmt::format("{}_sum{} {}\n{}_count{} {}\n", name, braces(labels), number(sum_), name, braces(labels), count_);
}

ServerMetrics::ServerMetrics(MetricsOptions opts)
    : opts_(std::move(opts)),
      ttft_(kLatencyBuckets),
      tpot_(kTokenGapBuckets),
      itl_(kTokenGapBuckets),
      e2e_(kRequestBuckets),
      queue_(kRequestBuckets),
      prefill_(kRequestBuckets),
      decode_(kRequestBuckets),
      inference_(kRequestBuckets),
      prompt_len_(
          {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000, 200000, 500000, 1000000}),
      gen_len_({1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000}) {}

std::string ServerMetrics::labels(const std::string& extra) const {
  std::string model = opts_.model_name.empty() ? "" : "model_name=\"" + escape_label(opts_.model_name) + "\"";
  if (extra.empty()) return model;
  return model.empty() ? extra : extra + "," + model;
}

void ServerMetrics::record_http(const std::string& endpoint, int status) {
  std::lock_guard<std::mutex> lk(mu_);
  http_[{endpoint, status}]++;
}

void ServerMetrics::record_inter_token(double gap_s, int tokens) {
  if (tokens <= 0 || !(gap_s >= 0)) return;
  std::lock_guard<std::mutex> lk(mu_);
  itl_.observe(gap_s / tokens, uint64_t(tokens));
}

void ServerMetrics::record_generation(const GenerationRecord& r) {
  std::lock_guard<std::mutex> lk(mu_);
  finished_[r.finish_reason]++;
  prompt_tokens_ += r.prompt_tokens;
  generation_tokens_ += r.generation_tokens;
  prompt_len_.observe(r.prompt_tokens);
  gen_len_.observe(r.generation_tokens);
  e2e_.observe(r.e2e_s);
  if (r.queue_s >= 0) queue_.observe(r.queue_s);
  if (r.prefill_s >= 0) prefill_.observe(r.prefill_s);
  if (r.decode_s >= 0) decode_.observe(r.decode_s);
  if (r.prefill_s >= 0 && r.decode_s >= 0) inference_.observe(r.prefill_s + r.decode_s);
  if (r.ttft_s >= 0) {
    ttft_.observe(r.ttft_s);
    if (r.generation_tokens > 1) tpot_.observe((r.e2e_s - r.ttft_s) / (r.generation_tokens - 1));
  }
}

std::string ServerMetrics::render(const EngineStats& e) const {
  std::lock_guard<std::mutex> lk(mu_);
  const std::string& p = opts_.prefix;
  const std::string model = labels();
  std::string out;
  auto scalar = [&](const char* name, const char* type, const char* help, const std::string& value) {
    header(&out, p + name, type, help);
    out += fmt::format("{}{}{} {}\n", p, name, braces(model), value);
  };
  auto histogram = [&](const char* name, const char* help, const Histogram& h) {
    header(&out, p + name, "histogram", help);
    h.render(p + name, &out, model);
  };
  // Engine state (sampled now).
  scalar("num_requests_running", "gauge", "Number of requests in the running batch.", std::to_string(e.running));
  scalar("num_requests_waiting", "gauge", "Number of requests waiting to be scheduled.", std::to_string(e.waiting));
  scalar("kv_cache_usage_perc", "gauge", "KV-cache (MLA latent pages) usage: 1 means 100 percent.", number(e.kv_usage));
  scalar("gpu_cache_usage_perc", "gauge", "The same as kv_cache_usage_perc (the older vLLM name).", number(e.kv_usage));
  scalar("state_cache_usage_perc", "gauge", "KDA state slots in use: 1 means 100 percent.", number(e.state_usage));
  scalar("num_preemptions_total", "counter", "Cumulative number of preemptions (sequences recomputed later).",
         std::to_string(e.num_preemptions));
  // Finished generations.
  scalar("prompt_tokens_total", "counter", "Number of prefill tokens processed (finished generations).",
         std::to_string(prompt_tokens_));
  scalar("generation_tokens_total", "counter", "Number of generation tokens processed (finished generations).",
         std::to_string(generation_tokens_));
  header(&out, p + "request_success_total", "counter", "Count of finished requests, by finish reason.");
  for (const auto& [reason, n] : finished_)
    out += fmt::format("{}request_success_total{{{}}} {}\n", p, labels("finished_reason=\"" + escape_label(reason) + "\""),
                       n);
  histogram("time_to_first_token_seconds", "Histogram of time to first token in seconds.", ttft_);
  histogram("time_per_output_token_seconds", "Histogram of mean time per output token (after the first) in seconds.",
            tpot_);
  histogram("inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", itl_);
  histogram("e2e_request_latency_seconds", "Histogram of end-to-end request latency in seconds.", e2e_);
  histogram("request_queue_time_seconds", "Histogram of time spent waiting before the first step, in seconds.", queue_);
  histogram("request_prefill_time_seconds", "Histogram of time from first scheduled to first token, in seconds.",
            prefill_);
  histogram("request_decode_time_seconds", "Histogram of time from first token to last token, in seconds.", decode_);
  histogram("request_inference_time_seconds", "Histogram of prefill plus decode time, in seconds.", inference_);
  histogram("request_prompt_tokens", "Number of prefill tokens processed, per request.", prompt_len_);
  histogram("request_generation_tokens", "Number of generation tokens processed, per request.", gen_len_);
  // Engine counters (tokens as computed, including unfinished and aborted requests).
  scalar("engine_prompt_tokens_total", "counter", "Prompt tokens the engine computed.",
         std::to_string(e.prompt_tokens_total));
  scalar("engine_generation_tokens_total", "counter", "Tokens the engine sampled.",
         std::to_string(e.generation_tokens_total));
  scalar("engine_steps_total", "counter", "Engine steps (forward passes).", std::to_string(e.steps));
  scalar("engine_step_schedule_seconds_total", "counter", "Step thread's wall time planning steps (scheduler).",
         fmt::format("{:.6f}", e.schedule_seconds));
  scalar("engine_step_execute_seconds_total", "counter",
         "Step thread's wall time executing steps (backend: forward, sampling, waiting for the device).",
         fmt::format("{:.6f}", e.execute_seconds));
  scalar("engine_step_update_seconds_total", "counter",
         "Step thread's wall time taking steps' outputs (scheduler update, detokenizing, stop checks).",
         fmt::format("{:.6f}", e.update_seconds));
  header(&out, p + "cache_config_info", "gauge", "Information of the cache configuration (labels; value 1).");
  std::string info;
  for (const auto& [k, v] : opts_.cache_config) info += (info.empty() ? "" : ",") + k + "=\"" + escape_label(v) + "\"";
  out += fmt::format("{}cache_config_info{} 1\n", p, braces(labels(info)));
  header(&out, p + "http_requests_total", "counter", "HTTP requests answered, by endpoint and status code.");
  for (const auto& [k, n] : http_)
    out += fmt::format("{}http_requests_total{{endpoint=\"{}\",status=\"{}\"}} {}\n", p, escape_label(k.first),
                       k.second, n);
  // Prefix caching (docs/PREFIX_CACHE.md): vLLM's prefix_cache_queries / prefix_cache_hits (tokens), and the
  // KDA snapshot pool, which vLLM does not have.
  scalar("prefix_cache_queries_total", "counter", "Prompt tokens looked up in the prefix cache.",
         std::to_string(e.prefix_cache_queries));
  scalar("prefix_cache_hits_total", "counter", "Prompt tokens served by the prefix cache.",
         std::to_string(e.prefix_cache_hits));
  scalar("prefix_snapshots", "gauge", "KDA state snapshots held by the prefix cache.", std::to_string(e.snapshots_used));
  scalar("prefix_snapshot_capacity", "gauge", "Size of the KDA snapshot pool.", std::to_string(e.snapshots_capacity));
  scalar("prefix_snapshot_usage_perc", "gauge", "KDA snapshot pool usage: 1 means 100 percent.",
         number(e.snapshots_capacity ? double(e.snapshots_used) / e.snapshots_capacity : 0.0));
  scalar("prefix_snapshot_saves_total", "counter", "KDA snapshots saved (and found finite).",
         std::to_string(e.snapshots_saved));
  scalar("prefix_snapshot_evictions_total", "counter", "KDA snapshots evicted (least recently used).",
         std::to_string(e.snapshot_evictions));
  scalar("prefix_snapshot_nonfinite_total", "counter", "KDA snapshots dropped because they held a NaN or an infinity.",
         std::to_string(e.snapshots_nonfinite));
  render_process_metrics(&out);
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
