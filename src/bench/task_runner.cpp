#include "bench/task_runner.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <cmath>
#include <exception>
#include <random>

namespace ds::bench {

namespace asio = boost::asio;

std::vector<double> arrival_times(size_t n, double rate, double burstiness, uint64_t seed) {
  std::vector<double> t(n, 0.0);
  if (!(rate > 0) || std::isinf(rate)) return t;
  std::mt19937_64 rng(seed);
  std::gamma_distribution<double> gap(burstiness, 1.0 / (rate * burstiness));
  double now = 0.0;
  for (size_t i = 0; i < n; ++i) {
    t[i] = now;  // the first request goes at once
    now += gap(rng);
  }
  return t;
}

AsyncLimiter::AsyncLimiter(asio::any_io_executor ex, int64_t permits)
    : ex_(std::move(ex)), unlimited_(permits <= 0), available_(permits) {}

asio::awaitable<void> AsyncLimiter::acquire() {
  if (unlimited_) co_return;
  if (available_ > 0) {
    --available_;
    co_return;
  }
  auto timer = std::make_shared<asio::steady_timer>(ex_, asio::steady_timer::time_point::max());
  waiters_.push_back(timer);
  boost::system::error_code ec;
  co_await timer->async_wait(asio::redirect_error(asio::use_awaitable, ec));  // release() cancels it
}

void AsyncLimiter::release() {
  if (unlimited_) return;
  if (waiters_.empty()) {
    ++available_;
    return;
  }
  auto next = std::move(waiters_.front());  // hand the permit straight to the oldest waiter
  waiters_.pop_front();
  next->cancel();
}

void run_tasks(asio::io_context& io, const std::vector<double>& arrival_s, int64_t max_concurrency,
               const std::function<asio::awaitable<void>(size_t)>& task) {
  AsyncLimiter limiter(io.get_executor(), max_concurrency);
  std::exception_ptr first_error;
  auto on_done = [&](std::exception_ptr e) {
    if (e && !first_error) first_error = e;
  };
  auto one = [&](size_t i) -> asio::awaitable<void> {
    co_await limiter.acquire();
    std::exception_ptr err;
    try {
      co_await task(i);
    } catch (...) {
      err = std::current_exception();
    }
    limiter.release();
    if (err) std::rethrow_exception(err);
  };
  auto launcher = [&]() -> asio::awaitable<void> {
    const auto start = std::chrono::steady_clock::now();
    asio::steady_timer timer(io);
    for (size_t i = 0; i < arrival_s.size(); ++i) {
      const auto at = start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                  std::chrono::duration<double>(arrival_s[i]));
      if (at > std::chrono::steady_clock::now()) {
        timer.expires_at(at);
        co_await timer.async_wait(asio::use_awaitable);
      }
      asio::co_spawn(io, one(i), on_done);
    }
  };
  asio::co_spawn(io, launcher(), on_done);
  io.restart();
  io.run();
  if (first_error) std::rethrow_exception(first_error);
}

}  // namespace ds::bench
