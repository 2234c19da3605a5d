// The job waits on events, not by polling: it wakes once per engine push (never with no news),
// the n streams of one request share one Notifier, and a cancellation (client gone, forced
// shutdown) wakes it at once even when the engine has nothing to say. Also the worker pool the
// server runs requests on.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "server/generation_job.h"
#include "server/worker_pool.h"
#include "server_fixture.h"

namespace ds::test {
namespace {

using namespace std::chrono_literals;

GenerationRequest request(const std::string& id, int max_tokens) {
  GenerationRequest r;
  r.request_id = id;
  r.prompt_tokens = {1, 2, 3};
  r.max_tokens = max_tokens;
  return r;
}

TEST(GenerationJob, WakesOncePerDeliveryNeverWithoutNews) {
  FakeEngine engine(tiny_tokenizer(), 256);
  engine.delay = 25ms;  // each token is pushed 25 ms after the previous one
  server::ServerMetrics metrics;
  server::GenerationJob job(engine, metrics, std::chrono::steady_clock::now());
  job.submit({request("a", 6)});
  int outputs = 0;
  ASSERT_TRUE(job.run([&](int, const GenerationOutput&) { ++outputs; }, [] { return false; }));
  EXPECT_EQ(outputs, 6);
  EXPECT_EQ(engine.deliveries(), 6);
  // The first token is due 25 ms after submit, so the job slept at least once; a poll (50 ms
  // waits on one stream, 2 ms on several) would show wake-ups with no news.
  EXPECT_GE(job.wakeups(), 1);
  EXPECT_LE(job.wakeups(), engine.deliveries());
  EXPECT_EQ(job.idle_wakeups(), 0);
}

TEST(GenerationJob, SeveralStreamsWakeOneSharedNotifier) {
  FakeEngine engine(tiny_tokenizer(), 256);
  engine.delay = 20ms;
  server::ServerMetrics metrics;
  server::GenerationJob job(engine, metrics, std::chrono::steady_clock::now());
  job.submit({request("a-0", 4), request("a-1", 4), request("a-2", 4)});
  auto ns = engine.notifiers();
  ASSERT_EQ(ns.size(), 3u);
  for (const auto& n : ns) EXPECT_EQ(n.get(), job.notifier().get());  // one notifier for all three
  std::vector<int> per_choice(3, 0);
  ASSERT_TRUE(job.run([&](int i, const GenerationOutput&) { ++per_choice[size_t(i)]; }, [] { return false; }));
  EXPECT_EQ(per_choice, (std::vector<int>{4, 4, 4}));
  EXPECT_EQ(engine.deliveries(), 12);
  EXPECT_GE(job.wakeups(), 1);
  EXPECT_LE(job.wakeups(), engine.deliveries());
  EXPECT_EQ(job.idle_wakeups(), 0);
  for (const auto& c : job.choices()) EXPECT_EQ(c.finish, FinishReason::Length);
}

TEST(GenerationJob, CancellationWakesTheWaitWithoutEngineNews) {
  FakeEngine engine(tiny_tokenizer(), 256);
  engine.delay = 60s;  // the engine stays silent for the whole test
  server::ServerMetrics metrics;
  server::GenerationJob job(engine, metrics, std::chrono::steady_clock::now());
  job.submit({request("a-0", 4), request("a-1", 4)});
  std::atomic<bool> cancel{false};
  std::thread canceller([&] {
    std::this_thread::sleep_for(50ms);
    cancel = true;
    job.notifier()->notify();  // what the writer's on_gone hook and cancel_all do
  });
  std::vector<FinishReason> last(2, FinishReason::None);
  auto t0 = std::chrono::steady_clock::now();
  bool complete = job.run([&](int i, const GenerationOutput& o) { last[size_t(i)] = o.finish; },
                          [&] { return cancel.load(); });
  canceller.join();
  EXPECT_FALSE(complete);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  EXPECT_EQ(job.wakeups(), 1);
  EXPECT_EQ(job.idle_wakeups(), 0);
  EXPECT_EQ(last, (std::vector<FinishReason>{FinishReason::Abort, FinishReason::Abort}));
  EXPECT_EQ(engine.aborted_copy().size(), 2u);
  EXPECT_EQ(engine.deliveries(), 0);
}

// Through the server: a client that leaves while the engine is silent is noticed at once (the
// connection's on_gone hook wakes the job), not at the next token. (Non-streamed: before any
// response bytes the HTTP layer tells a full close from a half-close by itself; mid-stream it
// learns it at the next write.)
TEST(GenerationJob, ClientDisconnectWakesASilentRequest) {
  ServerFixture f;
  f.engine.delay = 60s;
  {
    auto c = f.client();
    test::http::request<test::http::string_body> req{test::http::verb::post, "/v1/completions", 11};
    req.set(test::http::field::host, "x");
    req.body() = json{{"prompt", "x"}, {"max_tokens", 5}}.dump();
    req.prepare_payload();
    test::http::write(c.stream(), req);
    while (f.engine.submitted_copy().empty()) std::this_thread::sleep_for(1ms);
  }  // disconnect
  for (int i = 0; i < 300 && f.engine.aborted_copy().empty(); ++i) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(f.engine.aborted_copy().size(), 1u);
  EXPECT_EQ(f.engine.deliveries(), 0);
  for (int i = 0; i < 300 && f.server->requests_in_progress() > 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(f.server->requests_in_progress(), 0);
}

TEST(GenerationJob, ForcedCancelWakesASilentRequest) {
  ServerFixture f;
  f.engine.delay = 60s;
  Reply r;
  std::thread t([&] { r = f.post("/v1/completions", {{"prompt", "x"}, {"max_tokens", 5}}); });
  while (f.engine.submitted_copy().empty()) std::this_thread::sleep_for(1ms);
  auto t0 = std::chrono::steady_clock::now();
  f.server->cancel_all();
  t.join();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(f.engine.aborted_copy().size(), 1u);
}

TEST(WorkerPool, ReusesThreadsAndRefusesBeyondItsBound) {
  server::WorkerPool pool(2);
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  auto blocker = [&] {
    std::unique_lock<std::mutex> lk(mu);
    cv.wait(lk, [&] { return release; });
  };
  ASSERT_TRUE(pool.try_run(blocker));
  ASSERT_TRUE(pool.try_run(blocker));
  EXPECT_FALSE(pool.try_run([] {}));  // two running: at the bound
  EXPECT_EQ(pool.busy(), 2);
  {
    std::lock_guard<std::mutex> lk(mu);
    release = true;
  }
  cv.notify_all();
  pool.wait_idle();
  EXPECT_EQ(pool.busy(), 0);
  std::atomic<int> ran{0};
  for (int k = 0; k < 20; ++k) {
    ASSERT_TRUE(pool.try_run([&] { ++ran; }));
    pool.wait_idle();
  }
  EXPECT_EQ(ran.load(), 20);
  EXPECT_EQ(pool.threads(), 2);  // idle threads were reused, none added
  pool.stop();
  EXPECT_FALSE(pool.try_run([] {}));
}

}  // namespace
}  // namespace ds::test
