// Tensor parallelism on the GPU (issue 18, docs/PARALLEL.md): one CUDA backend per rank, each built from
// its shard (the shard plan cuts the checkpoint's tensors at load, or the dummy model's), each on its own
// thread and GPU, joined by NCCL when every rank has a GPU of its own (cuda/nccl_comm.h; the layers'
// collectives then live in each rank's CUDA graphs), else by the in-process device collectives
// (cuda/device_comm.h; DELTASERVE_CUDA_TP_COMM=inprocess asks for them on distinct GPUs too). execute() is rank 0's
// step: it broadcasts the plan's ForwardBatch (dist/batch_codec.h; the other ranks wait for it in a loop),
// runs rank 0's forward and samples on rank 0's GPU from its logits (every rank ends each layer with the
// same residual, so rank 0's logits are the model's); the other ranks run the same forward, meeting rank 0
// in every layer's all-reduce. With fewer GPUs than ranks, every rank shares GPU 0 (the one-GPU check of
// the sharding: each rank takes its share of --gpu-memory-utilization; it is not faster). Every rank's
// caches have rank 0's geometry. A step that fails on a rank aborts the group: that execute() and every
// later one throw a ds::Error naming the rank. Over the in-process group decode steps run eagerly (its host
// barriers cannot be captured). Over several nodes (--nnodes) each process holds its node's ranks, a GPU
// each, NCCL between all of them (its id from node 0 through the TCP group, dist/tcp_group.h, which then carries
// the step messages and rank 0's cache geometry); a node above 0 runs run_worker_node().
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "cuda/device_comm.h"
#include "cuda/peer_comm.h"
#include "dist/host_group.h"
#include "dist/rank_threads.h"
#include "model/backend.h"

namespace ds {

class ParallelCudaBackend : public Backend {
 public:
  explicit ParallelCudaBackend(const BackendOptions& opts);
  ~ParallelCudaBackend() override;

  const ModelConfig& config() const override { return ranks_.front()->config(); }
  BackendLimits limits() const override { return ranks_.front()->limits(); }
  std::string device_name() const override;
  StepResult execute(const StepPlan& plan) override;
  void run_worker_node() override;
  std::string failure() const override { return threads_ ? threads_->failure() : std::string(); }

  int world_size() const { return par_.world_size(); }
  Backend& rank(int r) { return *ranks_.at(size_t(r - par_.first_local_rank())); }  // tests: a local rank

 private:
  ParallelConfig par_;
  std::vector<int> devices_;  // local rank (rank - first local) -> GPU
  std::unique_ptr<HostGroup> host_;  // the plan broadcast and the end-of-step gather: in-process, or over nodes (TCP)
  std::unique_ptr<gpu::InProcessDeviceGroup> group_;  // the layers' collectives (ranks sharing a GPU), or
  std::vector<std::unique_ptr<gpu::DeviceComm>> nccl_;  // NCCL, a communicator per local rank (a GPU each)
  std::vector<std::unique_ptr<gpu::DeviceComm>> host_comms_;  // DELTASERVE_CUDA_TP_COMM=host (cuda/host_comm.h)
  std::unique_ptr<gpu::PeerAllReduceGroup> peer_;        // small all-reduces over peer memory (when asked)
  std::vector<std::unique_ptr<gpu::DeviceComm>> peer_comms_;  // wrapping nccl_ / group_
  std::vector<std::unique_ptr<Backend>> ranks_;          // this process's ranks
  std::unique_ptr<RankThreads> threads_;  // ranks 1..size-1 (dist/rank_threads.h)
};

}  // namespace ds
