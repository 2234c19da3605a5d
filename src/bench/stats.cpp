#include "bench/stats.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <utility>

namespace ds::bench {

double percentile_sorted(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0.0;
  const double rank = std::clamp(p, 0.0, 100.0) / 100.0 * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  const double frac = rank - static_cast<double>(lo);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * frac;
}

MetricSummary summarize(std::vector<double> values, const std::vector<double>& percentile_points) {
  MetricSummary s;
  s.percentiles.assign(percentile_points.size(), 0.0);
  if (values.empty()) return s;
  std::sort(values.begin(), values.end());
  const double n = static_cast<double>(values.size());
  s.mean = std::accumulate(values.begin(), values.end(), 0.0) / n;
  double sq = 0.0;
  for (double v : values) sq += (v - s.mean) * (v - s.mean);
  s.std = std::sqrt(sq / n);
  s.median = percentile_sorted(values, 50.0);
  s.max = values.back();
  for (size_t i = 0; i < percentile_points.size(); ++i)
    s.percentiles[i] = percentile_sorted(values, percentile_points[i]);
  return s;
}

double peak_output_throughput(const std::vector<RequestRecord>& records, double window_s) {
  double t0 = std::numeric_limits<double>::infinity();
  for (const auto& r : records)
    if (r.success) t0 = std::min(t0, r.start_s);
  if (!std::isfinite(t0)) return 0.0;
  std::map<int64_t, double> tokens_in_window;
  for (const auto& r : records) {
    if (!r.success) continue;
    const double chunks = static_cast<double>(r.itl_s.size() + 1);
    const double per_chunk = static_cast<double>(r.output_len) / chunks;
    double t = r.start_s + r.ttft_s;
    for (size_t i = 0; i <= r.itl_s.size(); ++i) {
      if (i > 0) t += r.itl_s[i - 1];
      tokens_in_window[static_cast<int64_t>(std::floor((t - t0) / window_s))] += per_chunk;
    }
  }
  double peak = 0.0;
  for (const auto& [window, tokens] : tokens_in_window) peak = std::max(peak, tokens);
  return peak / window_s;
}

int64_t peak_concurrency(const std::vector<RequestRecord>& records) {
  std::vector<std::pair<double, int>> events;  // (time, +1 start / -1 end); ends sort first at ties
  events.reserve(records.size() * 2);
  for (const auto& r : records) {
    events.emplace_back(r.start_s, +1);
    events.emplace_back(r.start_s + r.latency_s, -1);
  }
  std::sort(events.begin(), events.end());
  int64_t cur = 0, peak = 0;
  for (const auto& e : events) {
    cur += e.second;
    peak = std::max(peak, cur);
  }
  return peak;
}

BenchMetrics compute_metrics(const std::vector<RequestRecord>& records, double duration_s,
                             const std::vector<double>& percentile_points) {
  BenchMetrics m;
  m.duration_s = duration_s;
  m.percentile_points = percentile_points;
  std::vector<double> ttft, tpot, itl, e2el;
  for (const auto& r : records) {
    if (!r.success) {
      ++m.failed;
      continue;
    }
    ++m.completed;
    m.total_input += r.prompt_len;
    m.total_output += r.output_len;
    ttft.push_back(r.ttft_s * 1e3);
    e2el.push_back(r.latency_s * 1e3);
    if (r.output_len > 1) tpot.push_back((r.latency_s - r.ttft_s) * 1e3 / static_cast<double>(r.output_len - 1));
    for (double g : r.itl_s) itl.push_back(g * 1e3);
  }
  if (duration_s > 0) {
    m.request_throughput = static_cast<double>(m.completed) / duration_s;
    m.input_throughput = static_cast<double>(m.total_input) / duration_s;
    m.output_throughput = static_cast<double>(m.total_output) / duration_s;
    m.total_token_throughput = static_cast<double>(m.total_input + m.total_output) / duration_s;
  }
  m.max_output_tokens_per_s = peak_output_throughput(records);
  m.max_concurrent_requests = peak_concurrency(records);
  m.ttft_ms = summarize(std::move(ttft), percentile_points);
  m.tpot_ms = summarize(std::move(tpot), percentile_points);
  m.itl_ms = summarize(std::move(itl), percentile_points);
  m.e2el_ms = summarize(std::move(e2el), percentile_points);
  return m;
}

}  // namespace ds::bench
