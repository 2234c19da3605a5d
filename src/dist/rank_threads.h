// The rank-thread protocol of the parallel backends (model/parallel_cpu_backend.h on the CPU,
// cuda/parallel_cuda_backend.h on the GPU): this process's ranks other than 0, on threads of their own, wait
// for the step message rank 0 broadcasts over the group's host communicator (dist/batch_codec.h), run their
// part and end the step with rank 0 in a gather of the snapshots each saved non-finite (merged on every rank).
// The group is the process's (dist/host_group.h): every rank as threads of one process, or a node's ranks of
// a group that spans processes (dist/tcp_group.h), where the process without rank 0 only runs its rank
// threads until rank 0 stops them (wait()). The first failure on any rank aborts the group (and, through
// on_abort, anything else the ranks wait in) and is kept: that step and every later one throw a ds::Error
// naming the rank. stop() (or the destructor) sends the Stop message (on rank 0's process) and joins the
// threads.
#pragma once
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "dist/host_group.h"
#include "model/forward_batch.h"

namespace ds {

class RankThreads {
 public:
  // A rank's part of a step: its forward; returns the snapshots it saved non-finite.
  using RankStep = std::function<std::vector<int32_t>(int rank, const ForwardBatch& batch)>;
  // `what` names the backend in errors ("cpu parallel backend"); on_start(r) runs first on rank r's thread
  // (a failure there is the rank's); on_abort(why) runs with the group's abort.
  RankThreads(HostGroup& group, std::string what, RankStep rank_step, std::function<void(int)> on_start = {},
              std::function<void(const std::string&)> on_abort = {});
  ~RankThreads();
  RankThreads(const RankThreads&) = delete;
  RankThreads& operator=(const RankThreads&) = delete;

  // Throws when an earlier step failed (before anything of a new step is sent).
  void check() const;
  // The first failure ("rank 1: ..."), empty while there is none; any thread may ask.
  std::string failure() const;
  // Rank 0's step (rank 0's process only): the batch to the other ranks, `own()` (rank 0's part, returning
  // its non-finite snapshots), the end-of-step gather; every rank's non-finite snapshots, sorted, without repeats.
  std::vector<int32_t> step(const ForwardBatch& batch, const std::function<std::vector<int32_t>()>& own);
  // Ends the rank threads (idempotent; the owner calls it before the ranks they use go away). On a process
  // without rank 0, threads still running are ended by aborting the group.
  void stop();
  // A process without rank 0: runs until rank 0 stops the ranks (returns) or the group fails (throws the
  // first failure, naming the rank).
  void wait();

 private:
  void loop(int r);
  void record_failure(int r, const std::string& what);  // r < 0: not a rank's (the watcher's)

  HostGroup& group_;
  std::string what_;
  RankStep rank_step_;
  std::function<void(int)> on_start_;
  std::function<void(const std::string&)> on_abort_;
  std::vector<std::thread> threads_;  // this process's ranks but 0
  bool stopped_ = false;
  mutable std::mutex mu_;
  std::string failure_;                          // guarded by mu_
};

}  // namespace ds
