// The engine's push side of the server's event wait: every output pushed to a stream bumps the
// Notifier its reader set (one Notifier may serve several streams), try_next() never blocks, and
// a Notifier set after outputs were queued fires at once so nothing is missed.
#include <gtest/gtest.h>

#include <thread>

#include "engine/engine.h"
#include "engine_util.h"
#include "fake_backend.h"

using namespace ds;
using namespace ds::test;

TEST(Notifier, StreamsOfOneReaderShareOneNotifier) {
  auto n = std::make_shared<Notifier>();
  RequestStream a, b;
  a.set_notifier(n);
  b.set_notifier(n);
  EXPECT_EQ(n->count(), 0u);  // nothing queued: no wake-up
  EXPECT_FALSE(a.try_next());
  GenerationOutput o;
  o.completion_tokens = 1;
  a.push(o);
  b.push(o);
  b.push(o);
  EXPECT_EQ(n->count(), 3u);  // one per push, whichever stream
  EXPECT_EQ(n->wait(0), 3u);  // returns at once: news since 0
  EXPECT_TRUE(a.try_next());
  EXPECT_FALSE(a.try_next());
  EXPECT_TRUE(b.try_next());
  EXPECT_TRUE(b.try_next());
  EXPECT_FALSE(b.try_next());
}

TEST(Notifier, SetAfterAPushFiresAtOnce) {
  RequestStream s;
  s.push(GenerationOutput{});
  auto n = std::make_shared<Notifier>();
  s.set_notifier(n);
  EXPECT_EQ(n->count(), 1u);
}

TEST(Notifier, WaitSleepsUntilTheEnginePushes) {
  FakeOptions fo;
  EngineOptions eo;
  eo.max_num_seqs = 4;
  eo.max_num_batched_tokens = 64;
  Engine e(std::make_unique<FakeBackend>(fo), nullptr, eo);
  auto n = std::make_shared<Notifier>();
  std::vector<std::shared_ptr<RequestStream>> streams(2);
  for (int i = 0; i < 2; ++i) {
    GenerationRequest r;
    r.request_id = "r" + std::to_string(i);
    r.prompt_tokens = {1, 2, 3};
    r.max_tokens = 5;
    r.detokenize = false;
    std::string why;
    ASSERT_EQ(e.submit(r, &streams[size_t(i)], &why), SubmitStatus::Ok) << why;
    streams[size_t(i)]->set_notifier(n);
  }
  int finished = 0, outputs = 0, wakeups = 0, idle = 0;
  bool prev_news = false;
  for (;;) {
    const uint64_t seen = n->count();  // before looking: a push during the look still wakes the wait
    bool news = false;
    for (auto& s : streams)
      while (auto o = s->try_next()) {
        news = true;
        ++outputs;
        finished += o->finished();
      }
    if (wakeups > 0 && !news && !prev_news) ++idle;  // (a stale wake follows a look that took its push)
    prev_news = news;
    if (finished == 2) break;
    n->wait(seen);
    ++wakeups;
  }
  EXPECT_GE(outputs, 2);
  EXPECT_LE(wakeups, outputs);  // never more wake-ups than pushes
  EXPECT_EQ(idle, 0);
}
