// `deltaserve bench`'s command line: our flags and the `vllm bench serve` spellings users bring along
// (--dataset-name sharegpt|custom|random, --sharegpt-output-len, --save-result, --result-dir,
// --result-filename, --percentile-metrics, --label, ...). Parsing fills BenchArgs; bench_options() turns it
// into bench::BenchOptions (throws ds::Error), so tests can check a command line without a server.
#pragma once
#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

#include "bench/bench.h"

namespace ds::cli {

struct BenchArgs {
  bench::BenchOptions o;  // fields bound directly
  // Raw values; "" / 0 mean "not given" where the default depends on other flags.
  std::string backend, endpoint_type, rate = "inf", percentiles = "95,99", percentile_metrics, host;
  int port = 0;
  int64_t output_len = 0, sharegpt_output_len = 0;
  bool ignore_eos = false, no_ignore_eos = false, no_progress = false, disable_shuffle = false, no_oversample = false,
       save_detailed = false;
};

void add_bench_options(CLI::App& cmd, BenchArgs& a);
bench::BenchOptions bench_options(const BenchArgs& a);

}  // namespace ds::cli
