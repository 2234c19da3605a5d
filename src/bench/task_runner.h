// Driving many requests from one event loop: request arrival times (Poisson or gamma-bursty, as vLLM's
// --request-rate / --burstiness), a FIFO concurrency limiter for coroutines, and run_tasks(), which
// starts task i at its arrival time, holds it until a concurrency slot is free, and waits for all.
// Everything runs on the caller's thread (one io_context, no locks).
#pragma once
#include <utility>  // Boost 1.74's awaitable.hpp uses std::exchange without including <utility>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <vector>

namespace ds::bench {

// Send offsets in seconds from the start, [n], non-decreasing. rate: requests per second (inf or <= 0:
// all at 0). Gaps are gamma-distributed with shape `burstiness` and mean 1/rate (burstiness 1: Poisson).
std::vector<double> arrival_times(size_t n, double rate, double burstiness, uint64_t seed);

// A counting semaphore for coroutines on one io_context; permits pass to waiters in FIFO order.
class AsyncLimiter {
 public:
  AsyncLimiter(boost::asio::any_io_executor ex, int64_t permits);  // permits <= 0: unlimited
  boost::asio::awaitable<void> acquire();
  void release();

 private:
  boost::asio::any_io_executor ex_;
  bool unlimited_;
  int64_t available_;
  std::deque<std::shared_ptr<boost::asio::steady_timer>> waiters_;
};

// Runs task(i) for every i in [0, arrival_s.size()) on `io`: task i starts arrival_s[i] seconds after the
// call, then waits for one of max_concurrency slots (<= 0: unlimited). Returns when all are done;
// rethrows the first exception a task threw.
void run_tasks(boost::asio::io_context& io, const std::vector<double>& arrival_s, int64_t max_concurrency,
               const std::function<boost::asio::awaitable<void>(size_t)>& task);

}  // namespace ds::bench
