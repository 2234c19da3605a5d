// End to end: `serve`'s command line with --tensor-parallel-size 2 (and with --enable-expert-parallel)
// on --device cpu builds the parallel CPU backend, and the engine over it produces the same greedy
// tokens as --tensor-parallel-size 1 for concurrent requests (chunked prefill) and for a later request
// that extends one of their conversations (a prefix-cache hit: snapshots restored on every rank).
#include <gtest/gtest.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <future>

#include "../engine/engine_util.h"
#include "apps/serve_args.h"
#include "apps/vllm_flags.h"
#include "core/error.h"
#include "dist_test_util.h"
#include "dist/socket_io.h"
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

GenerationRequest greedy(std::vector<int32_t> prompt) {
  GenerationRequest q;
  q.prompt_tokens = std::move(prompt);
  q.max_tokens = 12;
  q.sampling.temperature = 0.0f;
  q.ignore_eos = true;
  q.detokenize = false;
  return q;
}

struct GreedyRun {
  std::vector<std::vector<int32_t>> tokens;  // per request
  std::vector<int> cached;  // the follow-ups' prompt tokens served from the prefix cache
  int answer_end = 0;       // the third conversation's prompt + answer but its last token
};

// Three concurrent requests, then (twice) one that extends the third one's conversation: a prefix-cache hit.
GreedyRun greedy_run(const std::vector<std::string>& extra, const std::string& want_device) {
  EngineOptions eo = serve_options(extra);
  auto backend = create_backend(eo.backend);
  EXPECT_NE(backend->device_name().find(want_device), std::string::npos) << backend->device_name();
  Engine e(std::move(backend), nullptr, eo);
  std::vector<std::vector<int32_t>> prompts;
  for (int r = 0; r < 3; ++r) {
    prompts.emplace_back();
    for (int i = 0; i < 20 + 17 * r; ++i) prompts.back().push_back(int32_t((i * 37 + r * 101 + 3) % 2000));
  }
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (const auto& p : prompts) streams.push_back(submit_ok(e, greedy(p)));
  GreedyRun out;
  for (auto& s : streams) {
    if (!s) return out;
    Collected c = collect(*s);
    EXPECT_EQ(c.finish, FinishReason::Length);
    out.tokens.push_back(c.tokens);
  }
  std::vector<int32_t> longer = prompts[2];
  longer.insert(longer.end(), out.tokens[2].begin(), out.tokens[2].end());
  for (int i = 0; i < 9; ++i) longer.push_back(int32_t(500 + 13 * i));
  // Twice, each sent the moment the previous answer ends: both resume at the third answer's end (the first
  // waits a step for that state's save: PrefixCache.ANextTurnSentAsTheAnswerEndsWaitsForTheAnswersState).
  out.answer_end = int(prompts[2].size() + out.tokens[2].size()) - 1;
  for (int twice = 0; twice < 2; ++twice) {
    Collected c = run_one(e, greedy(longer));
    out.tokens.push_back(c.tokens);
    out.cached.push_back(c.cached_tokens);
  }
  return out;
}

TEST(ServeParallel, Tp2OnTheCpuGivesTp1sGreedyTokens) {
  const GreedyRun one = greedy_run({}, "cpu (");
  ASSERT_EQ(one.tokens.size(), 5u);
  for (const auto& t : one.tokens) EXPECT_EQ(t.size(), 12u);
  // the state snapshots and pages of a cached prefix are used (on every rank, below)
  EXPECT_EQ(one.cached, (std::vector<int>{one.answer_end, one.answer_end}));
  for (const auto& [flags, name] : {std::pair{std::vector<std::string>{"--tensor-parallel-size", "2"}, "TP 2"},
                                    std::pair{std::vector<std::string>{"-tp", "2", "--enable-expert-parallel"}, "TP 2 + EP 2"}}) {
    const GreedyRun got = greedy_run(flags, name);
    EXPECT_EQ(got.tokens, one.tokens) << name;
    EXPECT_EQ(got.cached, one.cached) << name;
  }
}

// Two nodes (each a process's share of the group; here two backends in one test process, joined over loopback
// TCP as two processes would be): node 1 runs its rank until node 0's engine stops, and the engine on node 0
// gives TP 1's greedy tokens, prefix-cache hits included. (tests/dist/e2e_multinode.sh runs two real processes.)
TEST(ServeParallel, Tp2OverTwoNodesGivesTp1sGreedyTokens) {
  const GreedyRun one = greedy_run({}, "cpu (");
  ASSERT_EQ(one.tokens.size(), 5u);
  for (const bool ep : {false, true}) {
    int port = 0;
    net::listen_on(0, &port, "a free port");  // closed again at once: node 0 listens there next
    std::vector<std::string> flags = {"-tp", "2", "--nnodes", "2", "--master-addr", "127.0.0.1", "--master-port",
                                      std::to_string(port)};
    if (ep) flags.push_back("--enable-expert-parallel");
    auto worker = std::async(std::launch::async, [flags] {
      std::vector<std::string> f = flags;
      f.insert(f.end(), {"--node-rank", "1", "--headless"});
      auto backend = create_backend(serve_options(f).backend);
      EXPECT_NE(backend->device_name().find("1 rank threads"), std::string::npos) << backend->device_name();
      EXPECT_THROW(backend->execute(StepPlan{}), ds::Error);  // node 0 runs the engine
      backend->run_worker_node();
    });
    std::vector<std::string> f0 = flags;
    f0.insert(f0.end(), {"--node-rank", "0"});
    const GreedyRun got = greedy_run(f0, ep ? "TP 2 + EP 2 over 2 nodes" : "TP 2 over 2 nodes");
    EXPECT_EQ(got.tokens, one.tokens) << "EP " << ep;
    EXPECT_EQ(got.cached, one.cached) << "EP " << ep;
    EXPECT_NO_THROW(worker.get());  // node 0's backend stopped it
  }
}

}  // namespace
}  // namespace ds::test
