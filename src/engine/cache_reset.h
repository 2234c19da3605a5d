// Engine::reset_prefix_cache in two halves: the hand-over between the asking thread (an HTTP worker) and the
// step thread, which answers between two steps, and the reset itself on the scheduler (step thread only).
#pragma once
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>

#include "engine/engine.h"

namespace ds {

class Scheduler;

// One reset asked of the step thread. The asker waits up to a timeout; a reset the step thread has not started
// by then is abandoned and never runs (one it has started is waited for: it takes microseconds).
class ResetRequest {
 public:
  // Step thread: runs `reset` and answers with its result (an exception becomes Unavailable with its
  // message), unless the asker gave up already.
  void run(const std::function<PrefixCacheResetResult()>& reset);
  // The asker: the answer, or Unavailable when `timeout` passed before the step thread took the reset up.
  PrefixCacheResetResult wait(std::chrono::milliseconds timeout);
  // The answer while the engine shuts down (nothing is reset).
  static PrefixCacheResetResult shutting_down();

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool started_ = false, done_ = false, abandoned_ = false;
  PrefixCacheResetResult result_;
};

// The reset on the step thread, between a step's update and the next plan: Disabled when prefix caching is
// off, Busy (nothing changed) while requests run or wait, else Done with what Scheduler::reset_prefix_cache
// emptied.
PrefixCacheResetResult reset_prefix_cache(Scheduler& sched);

}  // namespace ds
