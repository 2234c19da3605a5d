#include "server/worker_pool.h"

namespace ds::server {

WorkerPool::WorkerPool(int max_workers) : max_(max_workers) {}

WorkerPool::~WorkerPool() { stop(); }

bool WorkerPool::try_run(std::function<void()> fn) {
  std::lock_guard<std::mutex> lk(mu_);
  if (stopping_ || busy_ >= max_) return false;
  ++busy_;
  queue_.push_back(std::move(fn));
  // Each accepted task has a thread: an idle one takes it, else a new one starts (at most max_).
  if (idle_threads_ >= int(queue_.size()))
    work_cv_.notify_one();
  else
    threads_.emplace_back([this] { loop(); });
  return true;
}

void WorkerPool::loop() {
  std::unique_lock<std::mutex> lk(mu_);
  for (;;) {
    ++idle_threads_;
    work_cv_.wait(lk, [&] { return stopping_ || !queue_.empty(); });
    --idle_threads_;
    if (queue_.empty()) return;  // stopping, nothing left
    auto fn = std::move(queue_.front());
    queue_.pop_front();
    lk.unlock();
    fn();
    fn = nullptr;  // destroyed (with whatever it holds) before the task counts as done
    lk.lock();
    if (--busy_ == 0) idle_cv_.notify_all();
  }
}

int WorkerPool::busy() const {
  std::lock_guard<std::mutex> lk(mu_);
  return busy_;
}

int WorkerPool::threads() const {
  std::lock_guard<std::mutex> lk(mu_);
  return int(threads_.size());
}

bool WorkerPool::wait_idle(std::chrono::steady_clock::time_point deadline) {
  std::unique_lock<std::mutex> lk(mu_);
  return idle_cv_.wait_until(lk, deadline, [&] { return busy_ == 0; });
}

void WorkerPool::wait_idle() {
  std::unique_lock<std::mutex> lk(mu_);
  idle_cv_.wait(lk, [&] { return busy_ == 0; });
}

void WorkerPool::stop() {
  std::vector<std::thread> ts;
  {
    std::lock_guard<std::mutex> lk(mu_);
    stopping_ = true;
    ts.swap(threads_);
  }
  work_cv_.notify_all();
  for (auto& t : ts) t.join();
}

}  // namespace ds::server
