// The server's request workers: threads it owns, started on demand up to a bound and reused, each
// running one request at a time (a generation request sleeps on its job's Notifier while it waits
// for the engine). stop() lets running work finish, then joins every thread; nothing is detached.
#pragma once
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace ds::server {

class WorkerPool {
 public:
  explicit WorkerPool(int max_workers);
  ~WorkerPool();  // stop()
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Runs `fn` on a worker unless `max_workers` tasks are already running or queued (then false).
  bool try_run(std::function<void()> fn);
  // Tasks accepted and not yet finished.
  int busy() const;
  // Blocks until busy() == 0 or `deadline`; true when idle.
  bool wait_idle(std::chrono::steady_clock::time_point deadline);
  void wait_idle();
  int threads() const;
  // Waits for the accepted tasks, then joins the threads; later try_run() calls fail. Idempotent.
  void stop();

 private:
  void loop();

  const int max_;
  mutable std::mutex mu_;
  std::condition_variable work_cv_, idle_cv_;
  std::deque<std::function<void()>> queue_;
  std::vector<std::thread> threads_;
  int busy_ = 0, idle_threads_ = 0;
  bool stopping_ = false;
};

}  // namespace ds::server
