#include "bench/report.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <ctime>
#include <sstream>

#include "core/error.h"

namespace ds::bench {

using nlohmann::json;

std::string percentile_label(double p) {
  if (p == std::floor(p)) return fmt::format("{}", static_cast<int64_t>(p));
  return fmt::format("{}", p);
}

namespace {

constexpr size_t kWidth = 50;

void title(std::string& s, const std::string& text, char fill) {
  const size_t pad = kWidth > text.size() + 2 ? kWidth - text.size() - 2 : 0;
  const size_t left = pad / 2, right = pad - pad / 2;
  s += fmt::format("{} {} {}\n", std::string(left, fill), text, std::string(right, fill));
}

// "label     value" right-aligned to kWidth; a long value pushes out rather than overlapping the label.
void row(std::string& s, const std::string& label, const std::string& value) {
  const size_t used = label.size() + value.size();
  const size_t pad = used < kWidth ? kWidth - used : 1;
  s += label + std::string(pad, ' ') + value + "\n";
}
std::string num(double v) { return fmt::format("{:.2f}", v); }

void metric_rows(std::string& s, const char* name, const MetricSummary& ms, const std::vector<double>& ps,
                 bool with_max) {
  row(s, fmt::format("Mean {} (ms):", name), num(ms.mean));
  row(s, fmt::format("Median {} (ms):", name), num(ms.median));
  for (size_t i = 0; i < ps.size(); ++i)
    row(s, fmt::format("P{} {} (ms):", percentile_label(ps[i]), name), num(ms.percentiles[i]));
  if (with_max) row(s, fmt::format("Max {} (ms):", name), num(ms.max));
}

void metric_json(json& j, const char* key, const MetricSummary& ms, const std::vector<double>& ps) {
  j[fmt::format("mean_{}_ms", key)] = ms.mean;
  j[fmt::format("median_{}_ms", key)] = ms.median;
  j[fmt::format("std_{}_ms", key)] = ms.std;
  for (size_t i = 0; i < ps.size(); ++i) j[fmt::format("p{}_{}_ms", percentile_label(ps[i]), key)] = ms.percentiles[i];
  j[fmt::format("max_{}_ms", key)] = ms.max;
}

constexpr const char* kMetricNames[] = {"ttft", "tpot", "itl", "e2el"};

bool shown(const RunInfo& info, const char* metric) {
  const auto& ms = info.percentile_metrics;
  return ms.empty() || std::find(ms.begin(), ms.end(), metric) != ms.end();
}

}  // namespace

std::string date_string() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%d-%H%M%S", &tm);
  return buf;
}

std::vector<std::string> parse_percentile_metrics(const std::string& list) {
  std::vector<std::string> out;
  std::stringstream ss(list);
  for (std::string item; std::getline(ss, item, ',');) {
    DS_CHECK(std::find(std::begin(kMetricNames), std::end(kMetricNames), item) != std::end(kMetricNames),
             "--percentile-metrics: '{}' is not one of ttft, tpot, itl, e2el", item);
    if (std::find(out.begin(), out.end(), item) == out.end()) out.push_back(item);
  }
  DS_CHECK(!out.empty(), "--percentile-metrics needs at least one of ttft, tpot, itl, e2el");
  return out;
}

std::string default_result_filename(const std::string& label, double request_rate, int64_t max_concurrency,
                                    const std::string& model, const std::string& date) {
  std::string rate;
  if (std::isinf(request_rate)) rate = "inf";
  else if (request_rate == std::floor(request_rate) && std::fabs(request_rate) < 1e16)
    rate = fmt::format("{:.1f}", request_rate);  // Python's str(4.0)
  else rate = fmt::format("{}", request_rate);   // shortest round trip, as Python's repr
  const std::string concurrency = max_concurrency > 0 ? fmt::format("-concurrency{}", max_concurrency) : "";
  const size_t slash = model.find_last_of('/');
  const std::string base = slash == std::string::npos ? model : model.substr(slash + 1);
  return fmt::format("{}-{}qps{}-{}-{}.json", label, rate, concurrency, base, date);
}

std::string format_report(const BenchMetrics& m, const RunInfo& info) {
  std::string s;
  s += std::string(kWidth, '=') + "\n";
  title(s, "Serving Benchmark Result", ' ');
  s += std::string(kWidth, '=') + "\n";
  row(s, "Model:", info.model);
  row(s, "Endpoint:", info.base_url + info.endpoint);
  row(s, "Successful requests:", fmt::format("{}", m.completed));
  row(s, "Failed requests:", fmt::format("{}", m.failed));
  row(s, "Request rate configured (req/s):", std::isinf(info.request_rate) ? "inf" : num(info.request_rate));
  row(s, "Maximum request concurrency:", info.max_concurrency > 0 ? fmt::format("{}", info.max_concurrency) : "none");
  row(s, "Benchmark duration (s):", num(m.duration_s));
  row(s, "Total input tokens:", fmt::format("{}", m.total_input));
  row(s, "Total generated tokens:", fmt::format("{}", m.total_output));
  row(s, "Request throughput (req/s):", num(m.request_throughput));
  row(s, "Input token throughput (tok/s):", num(m.input_throughput));
  row(s, "Output token throughput (tok/s):", num(m.output_throughput));
  row(s, "Peak output token throughput (tok/s):", num(m.max_output_tokens_per_s));
  row(s, "Peak concurrent requests:", fmt::format("{}", m.max_concurrent_requests));
  row(s, "Total token throughput (tok/s):", num(m.total_token_throughput));
  if (shown(info, "ttft")) {
    title(s, "Time to First Token", '-');
    metric_rows(s, "TTFT", m.ttft_ms, m.percentile_points, false);
  }
  if (shown(info, "tpot")) {
    title(s, "Time per Output Token (excl. 1st token)", '-');
    metric_rows(s, "TPOT", m.tpot_ms, m.percentile_points, false);
  }
  if (shown(info, "itl")) {
    title(s, "Inter-token Latency", '-');
    metric_rows(s, "ITL", m.itl_ms, m.percentile_points, true);
  }
  if (shown(info, "e2el")) {
    title(s, "End-to-end Latency", '-');
    metric_rows(s, "E2EL", m.e2el_ms, m.percentile_points, false);
  }
  s += std::string(kWidth, '=') + "\n";
  return s;
}

json result_json(const BenchMetrics& m, const std::vector<RequestRecord>& records, const RunInfo& info) {
  json j;
  j["date"] = info.date.empty() ? date_string() : info.date;
  j["backend"] = info.backend;
  j["endpoint_type"] = info.endpoint_type;
  j["base_url"] = info.base_url;
  j["endpoint"] = info.endpoint;
  j["model_id"] = info.model;
  j["dataset_name"] = info.dataset;
  j["num_prompts"] = info.num_prompts;
  j["request_rate"] = std::isinf(info.request_rate) ? json("inf") : json(info.request_rate);
  j["burstiness"] = info.burstiness;
  j["max_concurrency"] = info.max_concurrency > 0 ? json(info.max_concurrency) : json(nullptr);
  j["seed"] = info.seed;
  j["duration"] = m.duration_s;
  j["completed"] = m.completed;
  j["failed"] = m.failed;
  j["total_input_tokens"] = m.total_input;
  j["total_output_tokens"] = m.total_output;
  j["request_throughput"] = m.request_throughput;
  j["input_throughput"] = m.input_throughput;
  j["output_throughput"] = m.output_throughput;
  j["total_token_throughput"] = m.total_token_throughput;
  j["max_output_tokens_per_s"] = m.max_output_tokens_per_s;
  j["max_concurrent_requests"] = m.max_concurrent_requests;
  metric_json(j, "ttft", m.ttft_ms, m.percentile_points);
  metric_json(j, "tpot", m.tpot_ms, m.percentile_points);
  metric_json(j, "itl", m.itl_ms, m.percentile_points);
  metric_json(j, "e2el", m.e2el_ms, m.percentile_points);
  json input_lens = json::array(), output_lens = json::array(), ttfts = json::array(), itls = json::array(),
       e2els = json::array(), starts = json::array(), errors = json::array(), texts = json::array();
  for (const auto& r : records) {
    input_lens.push_back(r.prompt_len);
    output_lens.push_back(r.success ? r.output_len : 0);
    ttfts.push_back(r.success ? r.ttft_s : 0.0);
    itls.push_back(r.itl_s);
    e2els.push_back(r.latency_s);
    starts.push_back(r.start_s);
    errors.push_back(r.error);
    texts.push_back(r.generated_text);
  }
  j["input_lens"] = std::move(input_lens);
  j["output_lens"] = std::move(output_lens);
  j["ttfts"] = std::move(ttfts);
  j["itls"] = std::move(itls);
  j["e2els"] = std::move(e2els);
  j["start_times"] = std::move(starts);
  j["errors"] = std::move(errors);
  j["generated_texts"] = std::move(texts);
  return j;
}

}  // namespace ds::bench
