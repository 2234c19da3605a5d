// An event that happens at most once (a client gone, the server's forced cancel) with callbacks to
// run when it does: a waiting worker registers its wake-up here instead of polling the flag.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <utility>
#include <vector>

namespace ds::server {

class OneShotEvent {
 public:
  bool fired() const { return fired_.load(); }
  // Runs `fn` when the event fires, or at once (returning 0) when it already has; else returns an
  // id for remove().
  uint64_t add(std::function<void()> fn) {
    std::unique_lock<std::mutex> lk(mu_);
    if (fired_.load()) {
      lk.unlock();
      fn();
      return 0;
    }
    hooks_.emplace_back(++next_, std::move(fn));
    return next_;
  }
  void remove(uint64_t id) {
    std::lock_guard<std::mutex> lk(mu_);
    std::erase_if(hooks_, [&](const auto& h) { return h.first == id; });
  }
  // Fires the event: true the first time (its callbacks run now, outside the lock), false after.
  bool fire() {
    std::vector<std::pair<uint64_t, std::function<void()>>> hooks;
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (fired_.exchange(true)) return false;
      hooks.swap(hooks_);
    }
    for (auto& h : hooks) h.second();
    return true;
  }

 private:
  std::mutex mu_;
  std::atomic<bool> fired_{false};
  uint64_t next_ = 0;
  std::vector<std::pair<uint64_t, std::function<void()>>> hooks_;
};

}  // namespace ds::server
