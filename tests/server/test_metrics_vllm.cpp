// The metrics a vLLM dashboard reads (issue 16): vLLM's names under the configured prefix, the
// model_name label on every request/engine series, the new histograms (inter-token latency, queue,
// prefill, decode, inference time), cache_config_info, the process_* metrics; and the periodic
// stats line.
#include <gtest/gtest.h>

#include <string>

#include "prometheus_text.h"
#include "server/metrics.h"
#include "server/stats_log.h"

namespace ds::server {
namespace {

double sample(const std::string& body, const std::string& series) { return test::prometheus_sample(body, series); }

MetricsOptions vllm_options() {
  MetricsOptions o;
  o.prefix = "vllm:";
  o.model_name = "kimi \"linear\"";
  o.cache_config = {{"block_size", "16"}, {"num_gpu_blocks", "2048"}};
  return o;
}

TEST(VllmMetrics, NamesLabelsAndHistograms) {
  ServerMetrics m(vllm_options());
  GenerationRecord r;
  r.prompt_tokens = 10;
  r.generation_tokens = 5;
  r.finish_reason = "length";
  r.ttft_s = 0.5;
  r.e2e_s = 1.5;
  r.queue_s = 0.125;
  r.prefill_s = 0.25;
  r.decode_s = 1.0;
  m.record_generation(r);
  m.record_inter_token(0.3, 3);  // three tokens arrived together 0.3 s after the last: 0.1 s each
  m.record_inter_token(0.05, 1);
  m.record_inter_token(-1, 1);   // not a gap: ignored
  EngineStats e;
  e.running = 2;
  e.waiting = 3;
  e.kv_usage = 0.5;
  e.steps = 8;
  e.execute_seconds = 0.14;
  const std::string out = m.render(e);
  const std::string L = "model_name=\"kimi \\\"linear\\\"\"";  // the label value escaped
  EXPECT_EQ(sample(out, "vllm:num_requests_running{" + L + "}"), 2);
  EXPECT_EQ(sample(out, "vllm:num_requests_waiting{" + L + "}"), 3);
  EXPECT_EQ(sample(out, "vllm:kv_cache_usage_perc{" + L + "}"), 0.5);
  EXPECT_EQ(sample(out, "vllm:gpu_cache_usage_perc{" + L + "}"), 0.5);
  EXPECT_EQ(sample(out, "vllm:request_success_total{finished_reason=\"length\"," + L + "}"), 1);
  EXPECT_EQ(sample(out, "vllm:prompt_tokens_total{" + L + "}"), 10);
  EXPECT_EQ(sample(out, "vllm:inter_token_latency_seconds_count{" + L + "}"), 4);
  EXPECT_NEAR(sample(out, "vllm:inter_token_latency_seconds_sum{" + L + "}"), 0.35, 1e-12);
  EXPECT_EQ(sample(out, "vllm:inter_token_latency_seconds_bucket{" + L + ",le=\"0.075\"}"), 1);
  EXPECT_EQ(sample(out, "vllm:inter_token_latency_seconds_bucket{" + L + ",le=\"0.1\"}"), 4);
  EXPECT_EQ(sample(out, "vllm:request_queue_time_seconds_sum{" + L + "}"), 0.125);
  EXPECT_EQ(sample(out, "vllm:request_prefill_time_seconds_sum{" + L + "}"), 0.25);
  EXPECT_EQ(sample(out, "vllm:request_decode_time_seconds_sum{" + L + "}"), 1.0);
  EXPECT_EQ(sample(out, "vllm:request_inference_time_seconds_sum{" + L + "}"), 1.25);
  EXPECT_EQ(sample(out, "vllm:time_per_output_token_seconds_sum{" + L + "}"), 0.25);
  EXPECT_EQ(sample(out, "vllm:cache_config_info{block_size=\"16\",num_gpu_blocks=\"2048\"," + L + "}"), 1);
  EXPECT_NE(out.find("# TYPE vllm:request_prefill_time_seconds histogram\n"), std::string::npos);
  EXPECT_NE(out.find("# TYPE vllm:num_preemptions_total counter\n"), std::string::npos);
  EXPECT_EQ(sample(out, "vllm:engine_steps_total{" + L + "}"), 8);
  EXPECT_NEAR(sample(out, "vllm:engine_step_execute_seconds_total{" + L + "}"), 0.14, 1e-9);
  EXPECT_EQ(sample(out, "vllm:engine_step_schedule_seconds_total{" + L + "}"), 0);
  EXPECT_EQ(out.find("deltaserve_"), std::string::npos);
  // The standard process metrics, unprefixed.
  EXPECT_GT(sample(out, "process_resident_memory_bytes"), 1e5);
  EXPECT_GE(sample(out, "process_open_fds"), 3);
  EXPECT_GE(sample(out, "process_cpu_seconds_total"), 0);
  EXPECT_GT(sample(out, "process_start_time_seconds"), 1.6e9);
}

TEST(VllmMetrics, UnscheduledGenerationsSkipTheStageHistograms) {
  ServerMetrics m;  // default: deltaserve_ prefix, no model_name label
  GenerationRecord r;
  r.finish_reason = "abort";
  r.e2e_s = 0.2;  // aborted in the queue: never scheduled, no token
  m.record_generation(r);
  const std::string out = m.render({});
  EXPECT_EQ(sample(out, "deltaserve_e2e_request_latency_seconds_count"), 1);
  EXPECT_EQ(sample(out, "deltaserve_request_queue_time_seconds_count"), 0);
  EXPECT_EQ(sample(out, "deltaserve_request_prefill_time_seconds_count"), 0);
  EXPECT_EQ(sample(out, "deltaserve_time_to_first_token_seconds_count"), 0);
  EXPECT_EQ(sample(out, "deltaserve_cache_config_info"), 1);
}

TEST(StatsLog, ThroughputOverTheIntervalAndQuietWhenIdle) {
  using namespace std::chrono;
  const auto t0 = StatsLogger::Clock::time_point{} + hours(1);
  StatsLogger log(seconds(10), t0);
  EngineStats s;
  EXPECT_FALSE(log.tick(s, t0 + seconds(11)).has_value());  // idle: nothing to say
  s.prompt_tokens_total = 1000;
  s.generation_tokens_total = 200;
  s.running = 4;
  s.kv_usage = 0.031;
  EXPECT_FALSE(log.tick(s, t0 + seconds(15)).has_value());  // 4 s since the last line: too early
  auto line = log.tick(s, t0 + seconds(21));
  ASSERT_TRUE(line.has_value());
  EXPECT_EQ(*line,
            "stats: prompt throughput 100.0 tokens/s, generation throughput 20.0 tokens/s, running 4 reqs, waiting 0 "
            "reqs, KV cache usage 3.1%, KDA state usage 0.0%, preemptions 0");
  s.running = 0;
  EXPECT_FALSE(log.tick(s, t0 + seconds(31)).has_value());  // no new tokens, nothing running
  // A long prompt prefilling: its progress and the time left at the interval's prompt throughput.
  s.running = 1;
  s.prompt_tokens_total += 100000;
  s.prefill_done = 400000;
  s.prefill_total = 1000000;
  line = log.tick(s, t0 + seconds(41));
  ASSERT_TRUE(line.has_value());
  EXPECT_NE(line->find(", longest prefill 400000/1000000 tokens (40.0%), ~60 s left"), std::string::npos) << *line;
  // A short one gets no progress note.
  s.prompt_tokens_total += 1000;
  s.prefill_done = 100;
  s.prefill_total = 2000;
  line = log.tick(s, t0 + seconds(51));
  ASSERT_TRUE(line.has_value());
  EXPECT_EQ(line->find("longest prefill"), std::string::npos) << *line;
  // Steps in the interval: the mean wall time of each phase of the step thread.
  s.generation_tokens_total += 400;
  s.steps += 4;
  s.schedule_seconds += 4 * 0.00025;
  s.execute_seconds += 4 * 0.0175;
  s.update_seconds += 4 * 0.0005;
  line = log.tick(s, t0 + seconds(61));
  ASSERT_TRUE(line.has_value());
  EXPECT_NE(line->find(", steps 4 (mean ms: schedule 0.250, execute 17.500, outputs 0.500)"), std::string::npos)
      << *line;
}

}  // namespace
}  // namespace ds::server
