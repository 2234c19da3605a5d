// engine/output_delivery.h: batches reach their streams in the order posted, on the delivery thread (or at
// once in the synchronous form); flush() waits for everything posted; the destructor delivers what is queued.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "engine/output_delivery.h"

namespace ds::test {
namespace {

OutputDelivery::Batch batch(const std::shared_ptr<RequestStream>& s, int first, int n) {
  OutputDelivery::Batch b;
  for (int i = 0; i < n; ++i) {
    GenerationOutput o;
    o.completion_tokens = first + i;
    b.push_back({s, std::move(o)});
  }
  return b;
}

std::vector<int> drain(RequestStream& s) {
  std::vector<int> got;
  while (auto o = s.try_next()) got.push_back(o->completion_tokens);
  return got;
}

TEST(OutputDelivery, InOrderOnItsThreadAndFlushWaits) {
  auto s = std::make_shared<RequestStream>();
  std::mutex mu;
  std::vector<std::thread::id> threads;
  std::atomic<int> slow{0};
  {
    OutputDelivery d(
        [&](OutputDelivery::Batch& b) {
          if (slow.fetch_add(1) == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));  // let posts queue
          {
            std::lock_guard<std::mutex> lk(mu);
            threads.push_back(std::this_thread::get_id());
          }
          for (auto& it : b) it.stream->push(std::move(it.out));
        },
        true);
    for (int k = 0; k < 20; ++k) d.post(batch(s, 10 * k, 10));
    d.post({});  // nothing
    d.flush();
    std::vector<int> want(200);
    for (int i = 0; i < 200; ++i) want[size_t(i)] = i;
    EXPECT_EQ(drain(*s), want);  // every output, in order, before flush() returned
    d.post(batch(s, 200, 3));
  }  // the destructor delivers the last batch
  EXPECT_EQ(drain(*s), (std::vector<int>{200, 201, 202}));
  ASSERT_EQ(threads.size(), 21u);
  for (const auto& id : threads) EXPECT_NE(id, std::this_thread::get_id());
}

TEST(OutputDelivery, SynchronousFormDeliversInPost) {
  auto s = std::make_shared<RequestStream>();
  std::thread::id where;
  OutputDelivery d(
      [&](OutputDelivery::Batch& b) {
        where = std::this_thread::get_id();
        for (auto& it : b) it.stream->push(std::move(it.out));
      },
      false);
  d.post(batch(s, 0, 4));
  EXPECT_EQ(drain(*s), (std::vector<int>{0, 1, 2, 3}));  // already there: no flush needed
  EXPECT_EQ(where, std::this_thread::get_id());
  d.flush();  // (returns at once)
}

}  // namespace
}  // namespace ds::test
