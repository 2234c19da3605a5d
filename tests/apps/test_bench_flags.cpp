// `deltaserve bench` command lines as `vllm bench serve` users type them: --dataset-name (sharegpt, custom,
// random), the ShareGPT flags, --save-result / --result-dir / --result-filename / --label,
// --percentile-metrics, and the defaults that depend on other flags (backend label, --output-len).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "apps/bench_args.h"
#include "core/error.h"
#include "serve_parse.h"

namespace ds::cli {
namespace {

using test::parse_args;

// Parses `bench <args>`; "" on success, else the parse error. *out gets the finished options.
std::string parse_bench(const std::vector<std::string>& args, bench::BenchOptions* out) {
  CLI::App app;
  BenchArgs a;
  add_bench_options(app, a);
  std::string err = parse_args(app, args);
  if (!err.empty()) return err;
  try {
    *out = bench_options(a);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(BenchFlags, DefaultsAreUnchanged) {
  bench::BenchOptions o;
  ASSERT_EQ(parse_bench({}, &o), "");
  EXPECT_EQ(o.dataset, "random");
  EXPECT_EQ(o.base_url, "http://127.0.0.1:8000");
  EXPECT_EQ(o.type, bench::EndpointType::Completions);
  EXPECT_EQ(o.backend, "openai");
  EXPECT_EQ(o.output_len, 128);
  EXPECT_EQ(o.sharegpt.output_len, 0) << "from the data";
  EXPECT_TRUE(o.sharegpt.shuffle);
  EXPECT_TRUE(o.sharegpt.oversample);
  EXPECT_TRUE(o.percentile_metrics.empty()) << "the report shows every section";
  EXPECT_EQ(o.percentiles, (std::vector<double>{95, 99}));
  EXPECT_FALSE(o.save_result);
  EXPECT_TRUE(o.tokenizer.empty());
  EXPECT_EQ(o.warmup, 1);
}

TEST(BenchFlags, VllmShareGptCommandLine) {
  bench::BenchOptions o;
  ASSERT_EQ(parse_bench({"--backend",
                         "vllm",
                         "--host",
                         "10.0.0.2",
                         "--port",
                         "8100",
                         "--model",
                         "moonshotai/Kimi",
                         "--dataset-name",
                         "sharegpt",
                         "--dataset-path",
                         "ShareGPT_V3_unfiltered_cleaned_split.json",
                         "--num-prompts",
                         "200",
                         "--request-rate",
                         "4",
                         "--seed",
                         "12",
                         "--save-result",
                         "--result-dir",
                         "results",
                         "--result-filename",
                         "run.json",
                         "--label",
                         "ds",
                         "--percentile-metrics",
                         "ttft,tpot,itl,e2el",
                         "--metric-percentiles",
                         "50,90,99",
                         "--save-detailed",
                         "--num-warmups",
                         "0",
                         "--disable-tqdm"},
                        &o),
            "");
  EXPECT_EQ(o.dataset, "sharegpt");
  EXPECT_EQ(o.dataset_path, "ShareGPT_V3_unfiltered_cleaned_split.json");
  EXPECT_EQ(o.base_url, "http://10.0.0.2:8100");
  EXPECT_EQ(o.type, bench::EndpointType::Completions);
  EXPECT_EQ(o.backend, "vllm");
  EXPECT_EQ(o.num_prompts, 200);
  EXPECT_EQ(o.request_rate, 4.0);
  EXPECT_EQ(o.seed, 12u);
  EXPECT_TRUE(o.save_result);
  EXPECT_EQ(o.result_dir, "results");
  EXPECT_EQ(o.result_filename, "run.json");
  EXPECT_EQ(o.label, "ds");
  EXPECT_EQ(o.percentile_metrics, (std::vector<std::string>{"ttft", "tpot", "itl", "e2el"}));
  EXPECT_EQ(o.percentiles, (std::vector<double>{50, 90, 99}));
  EXPECT_EQ(o.warmup, 0);
  EXPECT_FALSE(o.progress);
  EXPECT_EQ(o.sharegpt.output_len, 0);
}

TEST(BenchFlags, ShareGptOptions) {
  bench::BenchOptions o;
  ASSERT_EQ(parse_bench({"--dataset", "sharegpt", "--dataset-path", "sg.json", "--tokenizer", "tok",
                         "--sharegpt-output-len", "64", "--disable-shuffle", "--no-oversample"},
                        &o),
            "");
  EXPECT_EQ(o.tokenizer, "tok");
  EXPECT_EQ(o.sharegpt.output_len, 64);
  EXPECT_FALSE(o.sharegpt.shuffle);
  EXPECT_FALSE(o.sharegpt.oversample);
  // vLLM's --output-len also fixes ShareGPT's output length; --sharegpt-output-len wins.
  ASSERT_EQ(parse_bench({"--dataset-name", "sharegpt", "--output-len", "50"}, &o), "");
  EXPECT_EQ(o.sharegpt.output_len, 50);
  EXPECT_EQ(o.output_len, 50);
  ASSERT_EQ(parse_bench({"--dataset-name", "sharegpt", "--output-len", "50", "--sharegpt-output-len", "9"}, &o), "");
  EXPECT_EQ(o.sharegpt.output_len, 9);
  EXPECT_NE(parse_bench({"--sharegpt-output-len", "0"}, &o).find("--sharegpt-output-len"), std::string::npos);
}

TEST(BenchFlags, DatasetNames) {
  bench::BenchOptions o;
  for (const char* name : {"random", "sharegpt", "custom", "jsonl", "fixed", "shared-prefix", "multi-turn"}) {
    ASSERT_EQ(parse_bench({"--dataset-name", name}, &o), "") << name;
    EXPECT_EQ(o.dataset, name);
    ASSERT_EQ(parse_bench({"--dataset", name}, &o), "") << name;
    EXPECT_EQ(o.dataset, name);
  }
  ASSERT_EQ(parse_bench({"--dataset-name", "custom", "--dataset-path", "p.jsonl", "--custom-output-len", "33"}, &o),
            "");
  EXPECT_EQ(o.output_len, 33);
  EXPECT_NE(parse_bench({"--dataset-name", "sonnet"}, &o).find("--dataset"), std::string::npos);
}

TEST(BenchFlags, BackendLabelAndEndpointType) {
  bench::BenchOptions o;
  ASSERT_EQ(parse_bench({"--endpoint-type", "chat"}, &o), "");
  EXPECT_EQ(o.type, bench::EndpointType::Chat);
  EXPECT_EQ(o.backend, "openai-chat");
  ASSERT_EQ(parse_bench({"--backend", "openai-chat"}, &o), "");
  EXPECT_EQ(o.type, bench::EndpointType::Chat);
  EXPECT_EQ(o.backend, "openai-chat");
  ASSERT_EQ(parse_bench({"--backend", "sglang", "--endpoint-type", "chat"}, &o), "");
  EXPECT_EQ(o.type, bench::EndpointType::Chat);
  EXPECT_EQ(o.backend, "sglang");
  ASSERT_EQ(parse_bench({"--port", "9000"}, &o), "");
  EXPECT_EQ(o.base_url, "http://127.0.0.1:9000");
  ASSERT_EQ(parse_bench({"--result-file", "r.json"}, &o), "");
  EXPECT_EQ(o.output_json, "r.json");
}

TEST(BenchFlags, PercentileMetricsAreChecked) {
  bench::BenchOptions o;
  ASSERT_EQ(parse_bench({"--percentile-metrics", "ttft,itl"}, &o), "");
  EXPECT_EQ(o.percentile_metrics, (std::vector<std::string>{"ttft", "itl"}));
  const std::string err = parse_bench({"--percentile-metrics", "ttft,goodput"}, &o);
  EXPECT_NE(err.find("--percentile-metrics"), std::string::npos) << err;
  EXPECT_NE(err.find("goodput"), std::string::npos) << err;
}

}  // namespace
}  // namespace ds::cli
