#include "engine/cache_reset.h"

#include <fmt/format.h>

#include "core/log.h"
#include "sched/scheduler.h"

namespace ds {

using Status = PrefixCacheResetResult::Status;

void ResetRequest::run(const std::function<PrefixCacheResetResult()>& reset) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (abandoned_) return;
    started_ = true;
  }
  PrefixCacheResetResult r;
  try {
    r = reset();
  } catch (const std::exception& e) {
    r = PrefixCacheResetResult{};
    r.message = fmt::format("the prefix cache reset failed: {}", e.what());
    spdlog::error("{}", r.message);
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    result_ = std::move(r);
    done_ = true;
  }
  cv_.notify_all();
}

PrefixCacheResetResult ResetRequest::wait(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lk(mu_);
  if (!cv_.wait_for(lk, timeout, [&] { return done_; })) {
    if (!started_) {
      abandoned_ = true;
      PrefixCacheResetResult r;
      r.message = fmt::format("the engine did not take up the prefix cache reset within {} ms (a step still running); "
                              "nothing was changed", timeout.count());
      return r;
    }
    cv_.wait(lk, [&] { return done_; });
  }
  return result_;
}

PrefixCacheResetResult ResetRequest::shutting_down() {
  PrefixCacheResetResult r;
  r.message = "the engine is shutting down; the prefix cache was not reset";
  return r;
}

PrefixCacheResetResult reset_prefix_cache(Scheduler& sched) {
  PrefixCacheResetResult r;
  if (!sched.prefix_cache().enabled()) {
    r.status = Status::Disabled;
    r.message = "prefix caching is off: there is nothing to flush";
    return r;
  }
  r.running = sched.num_running();
  r.waiting = sched.num_waiting();
  const std::optional<PrefixCacheCleared> cleared = sched.reset_prefix_cache();
  if (!cleared) {
    const int n = r.running + r.waiting;
    r.status = Status::Busy;
    r.message = fmt::format("cannot reset the prefix cache while {} request{} {} in progress ({} running, {} waiting); "
                            "nothing was changed: retry once the server is idle",
                            n, n == 1 ? "" : "s", n == 1 ? "is" : "are", r.running, r.waiting);
    return r;
  }
  r.status = Status::Done;
  r.snapshots_freed = cleared->snapshots;
  r.pages_unregistered = cleared->pages;
  r.message = fmt::format("prefix cache reset: {} KDA snapshot{} freed, {} shared page{} unregistered",
                          r.snapshots_freed, r.snapshots_freed == 1 ? "" : "s", r.pages_unregistered,
                          r.pages_unregistered == 1 ? "" : "s");
  spdlog::info("{}", r.message);
  return r;
}

}  // namespace ds
