#pragma once
// At most one log line per interval for a repeated event, with how often it happened meanwhile
// (a client that exhausts descriptors must not fill the disk with log lines). Not thread-safe:
// one owner (the accept loop) counts.
#include <chrono>
#include <cstdint>

namespace ds::server {

class RateLimitedLog {
 public:
  explicit RateLimitedLog(std::chrono::seconds interval) : interval_(interval) {}
  // Counts one occurrence; true when a line should be logged now (then `count()` is how many
  // occurrences it stands for).
  bool hit() {
    ++pending_;
    auto now = std::chrono::steady_clock::now();
    if (logged_ && now - last_ < interval_) return false;
    logged_ = true;
    last_ = now;
    count_ = pending_;
    pending_ = 0;
    return true;
  }
  int64_t count() const { return count_; }
  std::chrono::seconds interval() const { return interval_; }

 private:
  std::chrono::seconds interval_;
  std::chrono::steady_clock::time_point last_;
  bool logged_ = false;
  int64_t pending_ = 0, count_ = 0;
};

}  // namespace ds::server
