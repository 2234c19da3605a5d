// Serving-benchmark statistics: pure functions over per-request timing records, no I/O.
// A record holds what the client observed for one request (send time, first content chunk, gaps between
// later content chunks, end of response, token counts); compute_metrics() turns a run's records into the
// numbers of the report. Conventions (documented in docs/BENCH.md):
//  - percentiles interpolate linearly between closest ranks (numpy's default), std is the population std;
//  - TTFT, ITL and E2EL are over successful requests; TPOT = (e2el - ttft) / (output_len - 1) per request
//    with output_len > 1; ITL pools the gaps of all successful requests;
//  - peak output throughput counts tokens in fixed 1 s windows from the first request's send time, a
//    chunk's tokens landing at its arrival time (output_len spread evenly over the request's chunks);
//  - peak concurrency is the largest number of requests in flight at one instant (all sent requests).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace ds::bench {

struct RequestRecord {
  bool success = false;
  std::string error;          // why it failed (empty on success)
  int64_t prompt_len = 0;     // input tokens: usage.prompt_tokens, else the known prompt length, else 0
  int64_t output_len = 0;     // output tokens: usage.completion_tokens, else the number of content chunks
  double start_s = 0.0;       // when the request was sent, seconds since the benchmark started
  double ttft_s = 0.0;        // first content chunk - start
  double latency_s = 0.0;     // end of the response (or the failure) - start
  std::vector<double> itl_s;  // [chunks - 1] gaps between successive content chunks
  std::string generated_text;
};

// mean, median, std, max and the requested percentiles of one metric, in milliseconds.
struct MetricSummary {
  double mean = 0, median = 0, std = 0, max = 0;
  std::vector<double> percentiles;  // [ps.size()] values at BenchMetrics::percentile_points
};

struct BenchMetrics {
  int64_t completed = 0, failed = 0;
  double duration_s = 0;
  int64_t total_input = 0, total_output = 0;  // over successful requests
  double request_throughput = 0, input_throughput = 0, output_throughput = 0, total_token_throughput = 0;
  double max_output_tokens_per_s = 0;  // peak over 1 s windows
  int64_t max_concurrent_requests = 0;
  std::vector<double> percentile_points;  // e.g. {95, 99}
  MetricSummary ttft_ms, tpot_ms, itl_ms, e2el_ms;
};

// Value at percentile p in [0, 100] of `sorted` (ascending), interpolating linearly; 0 when empty.
double percentile_sorted(const std::vector<double>& sorted, double p);

MetricSummary summarize(std::vector<double> values, const std::vector<double>& percentile_points);

// Tokens in the busiest window [t0 + k*window_s, t0 + (k+1)*window_s), divided by window_s.
double peak_output_throughput(const std::vector<RequestRecord>& records, double window_s = 1.0);

// Most requests in flight at once; a request ending at t is no longer in flight for one starting at t.
int64_t peak_concurrency(const std::vector<RequestRecord>& records);

// duration_s: wall time of the measured phase (first send to last response end).
BenchMetrics compute_metrics(const std::vector<RequestRecord>& records, double duration_s,
                             const std::vector<double>& percentile_points);

}  // namespace ds::bench
