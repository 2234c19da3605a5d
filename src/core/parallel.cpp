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
    Job job;
    job.task = &task;
    job.total = tasks;
    job.pending = tasks;
    {
      std::lock_guard<std::mutex> lk(mu_);
      job_ = &job;
      ++generation_;
    }
    cv_.notify_all();
    work(&job);
    std::unique_lock<std::mutex> lk(mu_);
    // Wait for every task and for every worker to leave the job (it lives on this stack frame).
    done_cv_.wait(lk, [&] { return job.pending == 0 && job.active == 0; });
    job_ = nullptr;
    if (job.error) std::rethrow_exception(job.error);
  }

 private:
  // One parallel region. Workers register (active) under mu_ while job_ points to it, so a worker
  // that wakes late can never claim an index of a later job with this job's task.
  struct Job {
    const std::function<void(size_t)>* task = nullptr;
    size_t total = 0;
    std::atomic<size_t> next{0};
    size_t pending = 0;  // guarded by mu_
    int active = 0;      // workers inside work(), guarded by mu_
    std::exception_ptr error;
  };

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

  void work(Job* job) {
    for (;;) {
      size_t i = job->next.fetch_add(1);
      if (i >= job->total) break;
      try {
        (*job->task)(i);
      } catch (...) {
        std::lock_guard<std::mutex> lk(mu_);
        if (!job->error) job->error = std::current_exception();
      }
      std::lock_guard<std::mutex> lk(mu_);
      if (--job->pending == 0) done_cv_.notify_all();
    }
  }

  void loop() {
    uint64_t seen = 0;
    for (;;) {
      Job* job = nullptr;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return quit_ || generation_ != seen; });
        if (quit_) return;
        seen = generation_;
        job = job_;
        if (!job) continue;
        ++job->active;
      }
      work(job);
      std::lock_guard<std::mutex> lk(mu_);
      if (--job->active == 0 && job->pending == 0) done_cv_.notify_all();
    }
  }

  std::vector<std::thread> workers_;
  std::mutex job_mu_, mu_;
  std::condition_variable cv_, done_cv_;
  Job* job_ = nullptr;  // the running region, guarded by mu_
  uint64_t generation_ = 0;
  bool quit_ = false;
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
