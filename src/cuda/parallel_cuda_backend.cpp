#include "cuda/parallel_cuda_backend.h"

#include <cuda_runtime.h>
#include <spdlog/spdlog.h>

#include <cstdlib>

#include "core/error.h"
#include "cuda/cuda_backend.h"
#include "config/runtime_env.h"
#include "cuda/cuda_check.h"
#include "cuda/nccl_comm.h"
#include "cuda/stream.h"

namespace ds {

ParallelCudaBackend::ParallelCudaBackend(const BackendOptions& opts) : par_(opts.parallel) {
  par_.validate();
  const int n = par_.world_size(), gpus = gpu::device_count();
  DS_CHECK(gpus > 0, "CUDA backend: no CUDA device is visible");
  const bool shared = gpus < n;
  for (int r = 0; r < n; ++r) devices_.push_back(shared ? 0 : r);
  if (shared)
    spdlog::warn("cuda parallel: {} ranks on {} GPU(s): every rank shares GPU 0 (a check of the sharding, not "
                 "faster; each rank takes 1/{} of --gpu-memory-utilization)", n, gpus, n);
  host_ = std::make_unique<InProcessGroup>(n);
  // the layers' collectives: NCCL with a GPU per rank (unless asked otherwise or not loadable), each rank's
  // communicator made on a thread of its own (ncclCommInitRank waits for every rank)
  std::string why_not;
  const bool want_nccl = !shared && cuda_env().tp_comm != "inprocess";
  const bool nccl = want_nccl && gpu::nccl_available(&why_not);
  if (want_nccl && !nccl)
    spdlog::warn("cuda parallel: NCCL is not available ({}); the ranks meet through the in-process group (no CUDA "
                 "graphs)", why_not);
  if (nccl) {
    // (unless the user set them) NVLink multicast off: on shared hosts it can take the GPUs out of service;
    // every connection made while the ranks init together, none lazily at a first collective: the ranks start
    // one after another and capture their graphs alone, when no other rank would answer
    setenv("NCCL_NVLS_ENABLE", "0", 0);
    setenv("NCCL_RUNTIME_CONNECT", "0", 0);
    const gpu::NcclId id = gpu::nccl_unique_id();
    nccl_.resize(size_t(n));
    gpu::run_on_devices(devices_, [&](int r) { nccl_[size_t(r)] = std::make_unique<gpu::NcclComm>(id, r, n); });
    spdlog::info("cuda parallel: NCCL {} between {} GPUs", gpu::nccl_version(), n);
  } else {
    group_ = std::make_unique<gpu::InProcessDeviceGroup>(devices_);
  }
  // One rank after another (their start-up warm-ups run without the group): rank 0 sizes the caches, the
  // others take its geometry, so every rank has the same pages, slots and snapshots.
  for (int r = 0; r < n; ++r) {
    BackendOptions o = opts;
    if (shared) o.gpu_memory_utilization = opts.gpu_memory_utilization * double(r + 1) / double(n);
    if (r > 0) {
      const BackendLimits l = ranks_.front()->limits();
      o.num_blocks = l.num_blocks;
      o.num_snapshots = l.num_snapshots;
      o.kv_cache_tokens = 0;
    }
    CudaRankSetup s;
    s.shard = par_.shard(r);
    s.comm = nccl ? nccl_[size_t(r)].get() : &group_->comm(r);
    s.device = devices_[size_t(r)];
    ranks_.push_back(make_cuda_backend(o, s));
  }
  DS_CUDA_CHECK(cudaSetDevice(devices_.front()));
  par_.validate(config());
  threads_ = std::make_unique<RankThreads>(
      *host_, "cuda parallel backend",
      [this](int r, const ForwardBatch& b) {
        StepPlan p;
        p.batch = b;
        p.forward_only = true;  // nothing sampled on a rank: rank 0 samples
        return ranks_[size_t(r)]->execute(p).nonfinite_snapshots;
      },
      [this](int r) { DS_CUDA_CHECK(cudaSetDevice(devices_[size_t(r)])); },
      [this](const std::string& why) {
        if (group_) group_->abort(why);
        for (auto& c : nccl_) c->abort();
      });
  spdlog::info("cuda parallel: {} over {} rank threads ({})", par_.describe(), n,
               nccl ? "NCCL, CUDA graphs with the collectives" : "in-process device collectives");
}

ParallelCudaBackend::~ParallelCudaBackend() { threads_->stop(); }  // before the ranks go

std::string ParallelCudaBackend::device_name() const {
  return fmt::format("{} ({}, {} ranks on GPU{} {})", ranks_.front()->device_name(), par_.describe(), world_size(),
                     devices_.back() == devices_.front() ? "" : "s",
                     devices_.back() == devices_.front() ? std::to_string(devices_.front())
                                                         : fmt::format("0..{}", devices_.back()));
}

StepResult ParallelCudaBackend::execute(const StepPlan& plan) {
  threads_->check();
  check_sampling_rows(plan);
  DS_CUDA_CHECK(cudaSetDevice(devices_.front()));
  StepResult res;
  std::vector<int32_t> nonfinite = threads_->step(plan.batch, [&] {
    res = ranks_.front()->execute(plan);  // rank 0 samples on its GPU (its penalty history is the group's)
    return res.nonfinite_snapshots;
  });
  res.nonfinite_snapshots = std::move(nonfinite);
  return res;
}

}  // namespace ds
