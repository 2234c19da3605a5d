#include "cuda/parallel_cuda_backend.h"

#include <cuda_runtime.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "core/error.h"
#include "cuda/cuda_backend.h"
#include "cuda/cuda_check.h"
#include "cuda/stream.h"
#include "dist/batch_codec.h"

namespace ds {

ParallelCudaBackend::ParallelCudaBackend(const BackendOptions& opts) : par_(opts.parallel) {
  par_.validate();
  DS_CHECK(!par_.enable_expert_parallel,
           "--enable-expert-parallel with --device cuda: expert parallelism on the GPU is not built yet "
           "(tensor parallelism is: --tensor-parallel-size alone)");
  const int n = par_.world_size(), gpus = gpu::device_count();
  DS_CHECK(gpus > 0, "CUDA backend: no CUDA device is visible");
  const bool shared = gpus < n;
  for (int r = 0; r < n; ++r) devices_.push_back(shared ? 0 : r);
  if (shared)
    spdlog::warn("cuda parallel: {} ranks on {} GPU(s): every rank shares GPU 0 (a check of the sharding, not "
                 "faster; each rank takes 1/{} of --gpu-memory-utilization)", n, gpus, n);
  host_ = std::make_unique<InProcessGroup>(n);
  group_ = std::make_unique<gpu::InProcessDeviceGroup>(devices_);
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
    s.comm = &group_->comm(r);
    s.device = devices_[size_t(r)];
    ranks_.push_back(make_cuda_backend(o, s));
  }
  DS_CUDA_CHECK(cudaSetDevice(devices_.front()));
  par_.validate(config());
  nonfinite_.resize(size_t(n));
  for (int r = 1; r < n; ++r) threads_.emplace_back([this, r] { rank_loop(r); });
  spdlog::info("cuda parallel: {} over {} rank threads (in-process device collectives)", par_.describe(), n);
}

ParallelCudaBackend::~ParallelCudaBackend() {
  if (!host_->aborted()) {
    try {
      RankMessage m;
      m.command = RankCommand::Stop;
      std::vector<uint8_t> stop = encode_rank_message(m);
      broadcast_bytes(host_->comm(0), stop, 0);
    } catch (const std::exception& e) {
      host_->abort(e.what());
    }
  }
  for (auto& t : threads_) t.join();
}

std::string ParallelCudaBackend::device_name() const {
  return fmt::format("{} ({}, {} ranks on GPU{} {})", ranks_.front()->device_name(), par_.describe(), world_size(),
                     devices_.back() == devices_.front() ? "" : "s",
                     devices_.back() == devices_.front() ? std::to_string(devices_.front())
                                                         : fmt::format("0..{}", devices_.back()));
}

void ParallelCudaBackend::record_failure(int r, const std::string& what) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (failure_.empty()) failure_ = fmt::format("rank {}: {}", r, what);
  }
  host_->abort(failure());
  group_->abort(failure());
}

std::string ParallelCudaBackend::failure() const {
  std::lock_guard<std::mutex> lk(mu_);
  return failure_;
}

StepResult ParallelCudaBackend::step(int r, const StepPlan& plan) {
  StepResult out = ranks_[size_t(r)]->execute(plan);
  nonfinite_[size_t(r)] = std::move(out.nonfinite_snapshots);
  host_->comm(r).barrier();  // every rank has finished the step (and written nonfinite_)
  return out;
}

void ParallelCudaBackend::rank_loop(int r) {
  try {
    DS_CUDA_CHECK(cudaSetDevice(devices_[size_t(r)]));
  } catch (const std::exception& e) {
    record_failure(r, e.what());
    return;
  }
  Communicator& comm = host_->comm(r);
  for (;;) {
    try {
      std::vector<uint8_t> msg;
      broadcast_bytes(comm, msg, 0);
      RankMessage m = decode_rank_message(msg);
      if (m.command == RankCommand::Stop) return;
      StepPlan p;
      p.batch = std::move(m.batch);  // nothing sampled on a rank: rank 0 samples
      step(r, p);
    } catch (const std::exception& e) {
      record_failure(r, e.what());
      return;
    }
  }
}

StepResult ParallelCudaBackend::execute(const StepPlan& plan) {
  if (std::string f = failure(); !f.empty()) fail("cuda parallel backend: a previous step failed on {}", f);
  check_sampling_rows(plan);
  DS_CUDA_CHECK(cudaSetDevice(devices_.front()));
  StepResult res;
  try {
    std::vector<uint8_t> msg = encode_rank_message({.command = RankCommand::Step, .batch = plan.batch});
    broadcast_bytes(host_->comm(0), msg, 0);
    res = step(0, plan);  // rank 0 samples on its GPU (its penalty history is the group's)
  } catch (const std::exception& e) {
    record_failure(0, e.what());
    fail("cuda parallel backend: the step failed on {}", failure());
  }
  // A snapshot is non-finite when any rank's heads are.
  for (size_t r = 0; r < nonfinite_.size(); ++r)
    res.nonfinite_snapshots.insert(res.nonfinite_snapshots.end(), nonfinite_[r].begin(), nonfinite_[r].end());
  std::sort(res.nonfinite_snapshots.begin(), res.nonfinite_snapshots.end());
  res.nonfinite_snapshots.erase(std::unique(res.nonfinite_snapshots.begin(), res.nonfinite_snapshots.end()),
                                res.nonfinite_snapshots.end());
  return res;
}

}  // namespace ds
