// Statistics over a synthetic run whose every timing is known (binary fractions, so sums are exact).
#include <gtest/gtest.h>

#include <cmath>

#include "bench/report.h"
#include "bench/stats.h"

using namespace ds::bench;

namespace {

RequestRecord ok(double start, double ttft, std::vector<double> itl, double latency, int64_t in, int64_t out) {
  RequestRecord r;
  r.success = true;
  r.start_s = start;
  r.ttft_s = ttft;
  r.itl_s = std::move(itl);
  r.latency_s = latency;
  r.prompt_len = in;
  r.output_len = out;
  return r;
}

// Chunk arrival times (absolute): R0 0.5 0.75 1.0 1.5 (ends 1.5); R1 0.5 1.0 1.75 (ends 2.25);
// R2 2.0 (ends 2.25); R3 failed, in flight [1.25, 1.375].
std::vector<RequestRecord> synthetic_run() {
  std::vector<RequestRecord> rs;
  rs.push_back(ok(0.0, 0.5, {0.25, 0.25, 0.5}, 1.5, 10, 4));
  rs.push_back(ok(0.25, 0.25, {0.5, 0.75}, 2.0, 20, 3));
  rs.push_back(ok(1.0, 1.0, {}, 1.25, 30, 1));
  RequestRecord failed;
  failed.start_s = 1.25;
  failed.latency_s = 0.125;
  failed.prompt_len = 40;
  failed.error = "HTTP 500: boom";
  rs.push_back(failed);
  return rs;
}

}  // namespace

TEST(BenchStats, PercentileInterpolatesLinearly) {
  const std::vector<double> v = {1, 2, 3, 4};
  EXPECT_DOUBLE_EQ(percentile_sorted(v, 0), 1.0);
  EXPECT_DOUBLE_EQ(percentile_sorted(v, 25), 1.75);
  EXPECT_DOUBLE_EQ(percentile_sorted(v, 50), 2.5);
  EXPECT_DOUBLE_EQ(percentile_sorted(v, 100), 4.0);
  EXPECT_DOUBLE_EQ(percentile_sorted({7}, 99), 7.0);
  EXPECT_DOUBLE_EQ(percentile_sorted({}, 50), 0.0);
}

TEST(BenchStats, SummaryOfUnsortedValues) {
  MetricSummary s = summarize({3, 1, 2, 10}, {50, 90});
  EXPECT_DOUBLE_EQ(s.mean, 4.0);
  EXPECT_DOUBLE_EQ(s.median, 2.5);
  EXPECT_DOUBLE_EQ(s.max, 10.0);
  EXPECT_DOUBLE_EQ(s.std, std::sqrt((1.0 + 9.0 + 4.0 + 36.0) / 4.0));  // population std around 4
  EXPECT_DOUBLE_EQ(s.percentiles[0], 2.5);
  EXPECT_DOUBLE_EQ(s.percentiles[1], 3 + 0.7 * 7);  // rank 2.7 between 3 and 10
}

TEST(BenchStats, KnownSyntheticRun) {
  const auto rs = synthetic_run();
  const BenchMetrics m = compute_metrics(rs, 2.5, {95, 99});
  EXPECT_EQ(m.completed, 3);
  EXPECT_EQ(m.failed, 1);
  EXPECT_EQ(m.total_input, 60);  // the failed request's 40 are not counted
  EXPECT_EQ(m.total_output, 8);
  EXPECT_DOUBLE_EQ(m.duration_s, 2.5);
  EXPECT_DOUBLE_EQ(m.request_throughput, 1.2);
  EXPECT_DOUBLE_EQ(m.input_throughput, 24.0);
  EXPECT_DOUBLE_EQ(m.output_throughput, 3.2);
  EXPECT_DOUBLE_EQ(m.total_token_throughput, 27.2);

  // TTFT ms: 500, 250, 1000.
  EXPECT_NEAR(m.ttft_ms.mean, 1750.0 / 3, 1e-9);
  EXPECT_DOUBLE_EQ(m.ttft_ms.median, 500.0);
  EXPECT_DOUBLE_EQ(m.ttft_ms.percentiles[0], 950.0);  // p95: rank 1.9 of [250, 500, 1000]
  EXPECT_DOUBLE_EQ(m.ttft_ms.percentiles[1], 990.0);  // p99: rank 1.98
  EXPECT_DOUBLE_EQ(m.ttft_ms.max, 1000.0);
  const double mu = 1750.0 / 3;
  EXPECT_NEAR(m.ttft_ms.std,
              std::sqrt(((250 - mu) * (250 - mu) + (500 - mu) * (500 - mu) + (1000 - mu) * (1000 - mu)) / 3), 1e-9);

  // TPOT ms: R0 (1.5 - 0.5) / 3, R1 (2.0 - 0.25) / 2; R2 has one token and no TPOT.
  EXPECT_NEAR(m.tpot_ms.mean, (1000.0 / 3 + 875.0) / 2, 1e-9);
  EXPECT_NEAR(m.tpot_ms.median, (1000.0 / 3 + 875.0) / 2, 1e-9);
  EXPECT_DOUBLE_EQ(m.tpot_ms.max, 875.0);

  // ITL ms pooled: 250 250 500 500 750.
  EXPECT_DOUBLE_EQ(m.itl_ms.mean, 450.0);
  EXPECT_DOUBLE_EQ(m.itl_ms.median, 500.0);
  EXPECT_DOUBLE_EQ(m.itl_ms.percentiles[0], 700.0);  // p95: rank 3.8
  EXPECT_DOUBLE_EQ(m.itl_ms.percentiles[1], 740.0);  // p99: rank 3.96
  EXPECT_DOUBLE_EQ(m.itl_ms.max, 750.0);

  // E2EL ms: 1500, 2000, 1250.
  EXPECT_NEAR(m.e2el_ms.mean, 4750.0 / 3, 1e-9);
  EXPECT_DOUBLE_EQ(m.e2el_ms.median, 1500.0);
  EXPECT_DOUBLE_EQ(m.e2el_ms.percentiles[1], 1990.0);

  // Windows from t=0: [0,1) holds 0.5 0.75 (R0) and 0.5 (R1) = 3; [1,2) holds 1.0 1.5 (R0) and 1.0 1.75
  // (R1) = 4; [2,3) holds R2's one token.
  EXPECT_DOUBLE_EQ(m.max_output_tokens_per_s, 4.0);
  // At t=1.25 R0, R1, R2 and the failed R3 are all in flight.
  EXPECT_EQ(m.max_concurrent_requests, 4);
}

TEST(BenchStats, UsageTokensSpreadOverChunks) {
  // 2 chunks (at 0.25 and 1.25) carrying 6 tokens by the server's usage: 3 land in each window.
  std::vector<RequestRecord> rs = {ok(0.0, 0.25, {1.0}, 1.5, 1, 6)};
  EXPECT_DOUBLE_EQ(peak_output_throughput(rs), 3.0);
  // A 0.5 s window over the same chunks still sees 3 tokens in one window: 6 tok/s.
  EXPECT_DOUBLE_EQ(peak_output_throughput(rs, 0.5), 6.0);
}

TEST(BenchStats, WindowsStartAtTheFirstRequest) {
  // First send at 10.5 s: windows are [10.5, 11.5), ..., not [10, 11), [11, 12).
  // Chunks at 10.75 and 11.25 (R0) and 11.125 (R1) all fall in [10.5, 11.5).
  std::vector<RequestRecord> rs = {ok(10.5, 0.25, {0.5}, 1.0, 1, 2), ok(10.75, 0.375, {}, 0.5, 1, 1)};
  EXPECT_DOUBLE_EQ(peak_output_throughput(rs), 3.0);
}

TEST(BenchStats, PeakConcurrencyTreatsTouchingIntervalsAsSequential) {
  std::vector<RequestRecord> rs = {ok(0.0, 0.5, {}, 1.0, 1, 1), ok(1.0, 0.5, {}, 1.0, 1, 1),
                                   ok(2.0, 0.5, {}, 1.0, 1, 1)};
  EXPECT_EQ(peak_concurrency(rs), 1);
  rs.push_back(ok(0.5, 0.25, {}, 2.0, 1, 1));  // [0.5, 2.5] overlaps all three, never two at once
  EXPECT_EQ(peak_concurrency(rs), 2);
}

TEST(BenchStats, AllFailedGivesZeros) {
  RequestRecord f;
  f.error = "refused";
  const BenchMetrics m = compute_metrics({f, f}, 1.0, {99});
  EXPECT_EQ(m.completed, 0);
  EXPECT_EQ(m.failed, 2);
  EXPECT_EQ(m.total_output, 0);
  EXPECT_DOUBLE_EQ(m.ttft_ms.mean, 0.0);
  EXPECT_DOUBLE_EQ(m.max_output_tokens_per_s, 0.0);
}

TEST(BenchReport, JsonUsesVllmKeysAndMatchesTheMetrics) {
  const auto rs = synthetic_run();
  const BenchMetrics m = compute_metrics(rs, 2.5, {95, 99});
  RunInfo info{"completions", "http://127.0.0.1:1", "/v1/completions", "m", "random", 4, INFINITY, 1.0, 0, 7};
  const auto j = result_json(m, rs, info);
  for (const char* key : {"duration",
                          "completed",
                          "failed",
                          "total_input_tokens",
                          "total_output_tokens",
                          "request_throughput",
                          "input_throughput",
                          "output_throughput",
                          "total_token_throughput",
                          "max_output_tokens_per_s",
                          "max_concurrent_requests",
                          "mean_ttft_ms",
                          "median_ttft_ms",
                          "std_ttft_ms",
                          "p99_ttft_ms",
                          "mean_tpot_ms",
                          "median_tpot_ms",
                          "p99_tpot_ms",
                          "mean_itl_ms",
                          "median_itl_ms",
                          "p95_itl_ms",
                          "p99_itl_ms",
                          "max_itl_ms",
                          "mean_e2el_ms",
                          "median_e2el_ms",
                          "p99_e2el_ms",
                          "input_lens",
                          "output_lens",
                          "ttfts",
                          "itls",
                          "errors"})
    EXPECT_TRUE(j.contains(key)) << key;
  EXPECT_EQ(j["completed"], 3);
  EXPECT_EQ(j["request_rate"], "inf");
  EXPECT_EQ(j["max_concurrency"], nullptr);
  EXPECT_DOUBLE_EQ(j["p95_itl_ms"].get<double>(), 700.0);
  EXPECT_EQ(j["output_lens"], nlohmann::json({4, 3, 1, 0}));
  EXPECT_EQ(j["itls"][0], nlohmann::json({0.25, 0.25, 0.5}));
  EXPECT_EQ(j["errors"][3], "HTTP 500: boom");

  const std::string table = format_report(m, info);
  EXPECT_NE(table.find("Successful requests:"), std::string::npos);
  EXPECT_NE(table.find("P95 ITL (ms):"), std::string::npos);
  EXPECT_NE(table.find("Max ITL (ms):"), std::string::npos);
  EXPECT_NE(table.find("Peak concurrent requests:"), std::string::npos);
  EXPECT_NE(table.find("700.00"), std::string::npos);
}
