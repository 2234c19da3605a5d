// Command-line flags are range- and type-checked with errors naming the flag (issue 11): values
// that used to wrap (--kv-cache-tokens 2^50), silently mean "default" (--max-model-len -5), refuse
// every request (--max-queue -1) or disable auth (--api-key '') are refused at parse time.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "apps/commands.h"
#include "apps/serve_args.h"
#include "serve_parse.h"
#include "core/error.h"

namespace ds::cli {
namespace {

using test::parse_args;

// Parses a serve command line into fresh ServeArgs; "" on success.
std::string parse_serve(const std::vector<std::string>& extra, ServeArgs* out = nullptr) {
  ServeArgs a;
  std::string err = test::parse_serve_line(extra, &a);
  if (out) *out = a;
  return err;
}

void expect_refused(const std::vector<std::string>& extra) {
  std::string err = parse_serve(extra);
  EXPECT_FALSE(err.empty()) << extra[0] << " " << extra[1] << " was accepted";
  EXPECT_NE(err.find(extra[0]), std::string::npos) << "the error does not name " << extra[0] << ": " << err;
}

TEST(CliFlags, PrefixCachingIsOnByDefaultAndCanBeTurnedOff) {
  ServeArgs a;
  ASSERT_EQ(parse_serve({}, &a), "");
  EXPECT_TRUE(a.enable_prefix_caching);
  EngineOptions eo = engine_options(a);
  EXPECT_TRUE(eo.enable_prefix_caching);
  EXPECT_EQ(eo.backend.num_snapshots, -1) << "sized from the snapshot budget";
  ASSERT_EQ(parse_serve({"--no-enable-prefix-caching"}, &a), "");
  EXPECT_FALSE(a.enable_prefix_caching);
  eo = engine_options(a);
  EXPECT_FALSE(eo.enable_prefix_caching);
  EXPECT_EQ(eo.backend.num_snapshots, 0);
  ASSERT_EQ(parse_serve({"--enable-prefix-caching", "--prefix-snapshot-memory", "2.5", "--prefix-snapshot-interval",
                         "1024"}, &a), "");
  eo = engine_options(a);
  EXPECT_TRUE(eo.enable_prefix_caching);
  EXPECT_EQ(eo.backend.snapshot_memory_gib, 2.5);
  EXPECT_EQ(eo.prefix_snapshot_interval, 1024);
  expect_refused({"--prefix-snapshot-memory", "-1"});
  expect_refused({"--prefix-snapshot-interval", "-5"});
}

TEST(CliFlags, ServeNumericFlagsAreRangeChecked) {
  expect_refused({"--kv-cache-tokens", "1125899906842624"});  // 2^50: wrapped the page count to 0
  expect_refused({"--kv-cache-tokens", "-1"});
  expect_refused({"--max-model-len", "-5"});
  expect_refused({"--max-model-len", "1e9"});
  expect_refused({"--max-queue", "-1"});  // answered 429 to everything
  expect_refused({"--max-queue", "0"});
  expect_refused({"--max-num-seqs", "0"});
  expect_refused({"--max-num-batched-tokens", "-3"});
  expect_refused({"--block-size", "0"});
  expect_refused({"--port", "70000"});
  expect_refused({"--port", "-1"});
  expect_refused({"--threads", "99999999999"});
  expect_refused({"--http-threads", "0"});
  expect_refused({"--max-request-bytes", "-5"});
  expect_refused({"--max-request-bytes", "0"});
  expect_refused({"--max-connections", "-1"});
  expect_refused({"--idle-timeout", "0"});
  expect_refused({"--header-timeout", "-2"});
  expect_refused({"--gpu-memory-utilization", "1.5"});
  expect_refused({"--gpu-memory-utilization", "nan"});
  expect_refused({"--shutdown-timeout", "inf"});
  expect_refused({"--shutdown-timeout", "-1"});
  expect_refused({"--max-num-seqs", "2.5"});
  expect_refused({"--max-step-cost", "-1"});
  expect_refused({"--max-step-cost", "nan"});
  expect_refused({"--long-prefill-interval", "0"});
}

TEST(CliFlags, EmptyApiKeyIsAnError) {
  expect_refused({"--api-key", ""});
  ::setenv("DELTASERVE_API_KEY", "", 1);
  ServeArgs a;
  EXPECT_EQ(parse_serve({}, &a), "");
  try {
    validate_serve_args(a);
    ADD_FAILURE() << "an empty DELTASERVE_API_KEY was taken as 'no key'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("DELTASERVE_API_KEY"), std::string::npos) << e.what();
  }
  ::setenv("DELTASERVE_API_KEY", "from-env", 1);
  EXPECT_EQ(parse_serve({}, &a), "");
  EXPECT_EQ(a.api_key, "from-env");
  EXPECT_NO_THROW(validate_serve_args(a));
  ::unsetenv("DELTASERVE_API_KEY");
}

TEST(CliFlags, ValidServeFlagsReachTheOptions) {
  ServeArgs a;
  ASSERT_EQ(parse_serve({"--max-model-len", "4096", "--kv-cache-tokens", "65536", "--max-queue", "7",
                         "--max-connections", "300", "--idle-timeout", "5", "--header-timeout", "2", "--port", "0",
                         "--api-key", "k", "--max-request-bytes", "1000", "--max-step-cost", "5000",
                         "--long-prefill-interval", "2", "--scheduling-policy", "priority"},
                        &a),
            "");
  EXPECT_NO_THROW(validate_serve_args(a));
  EngineOptions eo = engine_options(a);
  EXPECT_EQ(eo.scheduling_policy, SchedulingPolicy::Priority);
  ServeArgs d;
  ASSERT_EQ(parse_serve({}, &d), "");
  EXPECT_EQ(engine_options(d).scheduling_policy, SchedulingPolicy::Fcfs);  // vLLM's default
  EXPECT_EQ(eo.max_model_len, 4096);
  EXPECT_EQ(eo.backend.kv_cache_tokens, 65536);
  EXPECT_EQ(eo.max_waiting, 7);
  EXPECT_EQ(eo.step_cost.max_step_cost, 5000.0);
  EXPECT_EQ(eo.step_cost.long_prefill_interval, 2);
  server::ServerOptions so = server_options(a);
  EXPECT_EQ(so.http.max_connections, 300);
  EXPECT_EQ(so.http.idle_timeout, std::chrono::seconds(5));
  EXPECT_EQ(so.http.header_timeout, std::chrono::seconds(2));
  EXPECT_EQ(so.http.max_body_bytes, 1000u);
  EXPECT_EQ(so.api_key, "k");
  EXPECT_EQ(so.model_names, std::vector<std::string>{"m"});
}

TEST(CliFlags, RequestFieldPolicyAndCorsOrigins) {
  ServeArgs a;
  ASSERT_EQ(parse_serve({}, &a), "");
  server::ServerOptions so = server_options(a);
  EXPECT_FALSE(so.strict_request_fields);  // lenient by default, as vLLM
  EXPECT_EQ(so.allowed_origins, std::vector<std::string>{"*"});
  ASSERT_EQ(parse_serve({"--strict-request-fields", "--allowed-origins", "https://a.example", "https://b.example"}, &a),
            "");
  so = server_options(a);
  EXPECT_TRUE(so.strict_request_fields);
  EXPECT_EQ(so.allowed_origins, (std::vector<std::string>{"https://a.example", "https://b.example"}));
  // vLLM's spelling: one JSON list.
  ASSERT_EQ(parse_serve({"--allowed-origins", R"(["https://c.example", "http://localhost:3000"])"}, &a), "");
  EXPECT_EQ(server_options(a).allowed_origins,
            (std::vector<std::string>{"https://c.example", "http://localhost:3000"}));
  ASSERT_EQ(parse_serve({"--allowed-origins", R"(["", "x"])"}, &a), "");
  EXPECT_THROW(server_options(a), Error);  // an empty origin
  expect_refused({"--allowed-origins", ""});
}

// The other commands' numeric flags, through their real registration (the parse fails before
// any command runs).
TEST(CliFlags, OtherCommandsRangeCheckTheirFlags) {
  struct Case {
    std::vector<std::string> args;
    std::string flag;
  };
  const std::vector<Case> cases = {
      {{"generate", "--model", "x", "--ids", "1", "--max-tokens", "-5"}, "--max-tokens"},
      {{"generate", "--model", "x", "--ids", "1", "--top-p", "0"}, "--top-p"},
      {{"generate", "--model", "x", "--ids", "1", "--temperature", "nan"}, "--temperature"},
      {{"score", "--model", "x", "--ids", "1", "--out", "o", "--prefill-chunk", "-1"}, "--prefill-chunk"},
      {{"score", "--model", "x", "--ids", "1", "--out", "o", "--threads", "-4"}, "--threads"},
      {{"bench", "--num-prompts", "-1"}, "--num-prompts"},
      {{"bench", "--max-concurrency", "-2"}, "--max-concurrency"},
      {{"bench", "--random-input-len", "0"}, "--random-input-len"},
      {{"bench", "--random-range-ratio", "1.5"}, "--random-range-ratio"},
      {{"bench", "--timeout", "-1"}, "--timeout"},
      {{"bench", "--port", "0"}, "--port"},
      {{"eval", "gsm8k", "--parallel", "0"}, "--parallel"},
      {{"eval", "gsm8k", "--num-shots", "-1"}, "--num-shots"},
      {{"tokenize", "--repeats", "0"}, "--repeats"},
      {{"tokenize", "--bench-mb", "-1"}, "--bench-mb"},
  };
  for (const auto& c : cases) {
    CLI::App app;
    register_model_commands(app);
    register_tokenizer_commands(app);
    register_bench_commands(app);
    std::string err = parse_args(app, c.args);
    EXPECT_FALSE(err.empty()) << c.flag << " accepted";
    EXPECT_NE(err.find(c.flag), std::string::npos) << err;
  }
}

}  // namespace
}  // namespace ds::cli
