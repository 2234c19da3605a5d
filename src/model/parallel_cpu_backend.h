// Tensor and expert parallelism on the CPU (docs/PARALLEL.md): one CpuBackend per rank, each built
// from its shard (model/shard_weights.h) and running on its own thread, joined by an in-process
// communicator (dist/in_process.h), or, over several processes or nodes (--nnodes), by the TCP group
// (dist/tcp_group.h: each process holds its node's ranks). execute() is rank 0's step: it encodes the plan's
// ForwardBatch and broadcasts it (the other ranks wait for it in a loop), runs rank 0's forward (the
// collectives inside keep the ranks in step), gathers the ranks' non-finite snapshots and samples from rank
// 0's gathered logits with its own penalty history, as CpuBackend does. A process without rank 0 runs its
// ranks in run_worker_node(). Every rank's KDA state holds only its heads; the MLA latent cache is
// replicated. A step that fails on a rank aborts the group: that execute() and every later one throw a
// ds::Error naming the rank.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "dist/host_group.h"
#include "dist/rank_threads.h"
#include "model/backend.h"
#include "model/cpu_backend.h"
#include "sampling/penalties.h"

namespace ds {

class ParallelCpuBackend : public Backend {
 public:
  // Loads the model (load_cpu_model), checks opts.parallel against its config and shards it.
  explicit ParallelCpuBackend(const BackendOptions& opts);
  // From the whole model's config and weights in memory (tests); opts.parallel as above.
  ParallelCpuBackend(const ModelConfig& c, const HostWeights& w, const BackendOptions& opts);
  ~ParallelCpuBackend() override;

  const ModelConfig& config() const override { return cfg_; }  // the whole model's
  BackendLimits limits() const override { return ranks_.front()->limits(); }
  std::string device_name() const override;
  StepResult execute(const StepPlan& plan) override;
  void run_worker_node() override;
  std::string failure() const override { return threads_ ? threads_->failure() : std::string(); }

  int world_size() const { return par_.world_size(); }
  CpuBackend& rank(int r) { return *ranks_.at(size_t(r - group_->first_local())); }  // tests: a local rank's caches and model

 private:
  void start(const HostWeights& w, const BackendOptions& opts);
  StepResult step(int r, const ForwardBatch& batch);  // rank r's forward (logits returned, nothing sampled)

  ModelConfig cfg_;
  ParallelConfig par_;
  std::unique_ptr<HostGroup> group_;
  std::vector<std::unique_ptr<CpuBackend>> ranks_;  // this process's ranks, from group_->first_local()
  std::unique_ptr<PenaltyTracker> penalties_;
  std::unique_ptr<RankThreads> threads_;  // this process's ranks but 0 (dist/rank_threads.h)
};

}  // namespace ds
