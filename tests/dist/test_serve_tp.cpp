// End to end: `serve`'s command line with --tensor-parallel-size 2 (and with --enable-expert-parallel)
// on --device cpu builds the parallel CPU backend, and the engine over it produces the same greedy
// tokens as --tensor-parallel-size 1 for concurrent requests (chunked prefill, prefix caching on).
#include <gtest/gtest.h>

#include <CLI/CLI.hpp>

#include "../engine/engine_util.h"
#include "apps/serve_args.h"
#include "apps/vllm_flags.h"
#include "dist_test_util.h"
#include "engine/backend_factory.h"

namespace ds::test {
namespace {

// The engine options of `deltaserve serve TINY --device cpu <extra>`, through the real registration.
EngineOptions serve_options(std::vector<std::string> extra) {
  std::vector<std::string> argv = {tiny_dir(), "--device", "cpu", "--max-model-len", "256", "--max-num-seqs", "4",
                                   "--max-num-batched-tokens", "24"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  CLI::App app;
  cli::ServeArgs a;
  cli::add_serve_options(app, a);
  argv.insert(argv.begin(), "deltaserve");
  argv = cli::expand_vllm_short_flags(argv);  // as main() does (-tp)
  std::vector<std::string> rev(argv.rbegin(), argv.rend() - 1);
  app.parse(rev);
  cli::validate_serve_args(a);
  return cli::engine_options(a);
}

std::vector<std::vector<int32_t>> greedy_tokens(const std::vector<std::string>& extra, const std::string& want_device) {
  EngineOptions eo = serve_options(extra);
  auto backend = create_backend(eo.backend);
  EXPECT_NE(backend->device_name().find(want_device), std::string::npos) << backend->device_name();
  Engine e(std::move(backend), nullptr, eo);
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (int r = 0; r < 3; ++r) {
    GenerationRequest q;
    for (int i = 0; i < 20 + 17 * r; ++i) q.prompt_tokens.push_back(int32_t((i * 37 + r * 101 + 3) % 2000));
    q.max_tokens = 12;
    q.sampling.temperature = 0.0f;
    q.ignore_eos = true;
    q.detokenize = false;
    streams.push_back(submit_ok(e, std::move(q)));
  }
  std::vector<std::vector<int32_t>> out;
  for (auto& s : streams) {
    if (!s) return out;
    Collected c = collect(*s);
    EXPECT_EQ(c.finish, FinishReason::Length);
    out.push_back(c.tokens);
  }
  return out;
}

TEST(ServeParallel, Tp2OnTheCpuGivesTp1sGreedyTokens) {
  const auto one = greedy_tokens({}, "cpu (");
  ASSERT_EQ(one.size(), 3u);
  for (const auto& t : one) EXPECT_EQ(t.size(), 12u);
  EXPECT_EQ(greedy_tokens({"--tensor-parallel-size", "2"}, "TP 2"), one);
  EXPECT_EQ(greedy_tokens({"-tp", "2", "--enable-expert-parallel"}, "TP 2 + EP 2"), one);
}

}  // namespace
}  // namespace ds::test
