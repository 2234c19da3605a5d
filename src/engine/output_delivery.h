// The step's outputs pushed to their request streams on a thread of its own. A push wakes the stream's
// reader (an HTTP worker sleeping on its Notifier: a futex wake-up per request and token), which costs the
// pushing thread microseconds each; on the step thread that cost would sit between two forwards, every
// step (measured by bench/cpu/bench_engine: docs/PERF.md). Batches are delivered in the order posted, each
// by `deliver` on the delivery thread.
#pragma once
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "engine/engine.h"

namespace ds {

class OutputDelivery {
 public:
  struct Item {
    std::shared_ptr<RequestStream> stream;
    GenerationOutput out;
  };
  using Batch = std::vector<Item>;
  // on_thread false: post() delivers at once on the caller's thread (the synchronous form, for A/B).
  OutputDelivery(std::function<void(Batch&)> deliver, bool on_thread);
  ~OutputDelivery();  // delivers what is queued, then joins
  OutputDelivery(const OutputDelivery&) = delete;
  OutputDelivery& operator=(const OutputDelivery&) = delete;

  void post(Batch batch);  // (an empty batch: nothing)
  void flush();            // returns once everything posted so far has been delivered

 private:
  void run();

  std::function<void(Batch&)> deliver_;
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  std::deque<Batch> queue_;
  uint64_t posted_ = 0, delivered_ = 0;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace ds
