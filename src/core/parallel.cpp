#include "core/parallel.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace ds {
namespace {

class Pool {
 public:
  explicit Pool(int n) { resize(n); }
  ~Pool() { stop(); }

  int size() const { return int(workers_.size()) + 1; }

  void resize(int n) {
    stop();
    n = std::max(1, n);
    quit_ = false;
    for (int i = 0; i < n - 1; ++i) workers_.emplace_back([this] { loop(); });
  }

  void run(size_t tasks, const std::function<void(size_t)>& task) {
    std::unique_lock<std::mutex> job_lock(job_mu_);  // one parallel region at a time
    {
      std::lock_guard<std::mutex> lk(mu_);
      task_ = &task;
      num_tasks_ = tasks;
      next_.store(0);
      pending_ = tasks;
      error_ = nullptr;
      ++generation_;
    }
    cv_.notify_all();
    work();
    std::unique_lock<std::mutex> lk(mu_);
    done_cv_.wait(lk, [&] { return pending_ == 0; });
    task_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void stop() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      quit_ = true;
      ++generation_;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  void work() {
    const std::function<void(size_t)>* task;
    size_t total;
    {
      std::lock_guard<std::mutex> lk(mu_);
      task = task_;
      total = num_tasks_;
    }
    if (!task) return;
    for (;;) {
      size_t i = next_.fetch_add(1);
      if (i >= total) break;
      try {
        (*task)(i);
      } catch (...) {
        std::lock_guard<std::mutex> lk(mu_);
        if (!error_) error_ = std::current_exception();
      }
      std::lock_guard<std::mutex> lk(mu_);
      if (--pending_ == 0) done_cv_.notify_all();
    }
  }

  void loop() {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return quit_ || generation_ != seen; });
        if (quit_) return;
        seen = generation_;
      }
      work();
    }
  }

  std::vector<std::thread> workers_;
  std::mutex job_mu_, mu_;
  std::condition_variable cv_, done_cv_;
  const std::function<void(size_t)>* task_ = nullptr;
  size_t num_tasks_ = 0, pending_ = 0;
  std::atomic<size_t> next_{0};
  uint64_t generation_ = 0;
  bool quit_ = false;
  std::exception_ptr error_;
};

int g_threads = 0;
thread_local bool t_in_parallel = false;

Pool& pool() {
  static Pool p(num_threads());
  return p;
}

}  // namespace

int num_threads() {
  if (g_threads <= 0) g_threads = std::max(1u, std::thread::hardware_concurrency());
  return g_threads;
}

void set_num_threads(int n) {
  g_threads = std::max(1, n);
  pool().resize(g_threads);
}

void parallel_for(size_t n, const std::function<void(size_t, size_t)>& fn, size_t grain) {
  if (n == 0) return;
  grain = std::max<size_t>(1, grain);
  size_t max_tasks = (n + grain - 1) / grain;
  size_t tasks = std::min<size_t>(max_tasks, size_t(num_threads()) * 4);
  if (tasks <= 1 || t_in_parallel || num_threads() == 1) {
    fn(0, n);
    return;
  }
  size_t chunk = (n + tasks - 1) / tasks;
  tasks = (n + chunk - 1) / chunk;
  pool().run(tasks, [&](size_t t) {
    struct Flag {
      Flag() { t_in_parallel = true; }
      ~Flag() { t_in_parallel = false; }
    } flag;
    size_t b = t * chunk, e = std::min(n, b + chunk);
    fn(b, e);
  });
}

}  // namespace ds
