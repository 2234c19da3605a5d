#include "model/parallel_cpu_backend.h"

#include <algorithm>

#include "core/error.h"
#include "core/log.h"
#include "core/parallel.h"
#include "dist/in_process.h"
#include "dist/rank_threads.h"
#include "dist/tcp_group.h"
#include "model/shard_weights.h"
#include "sampling/cpu_sampler.h"

namespace ds {

ParallelCpuBackend::ParallelCpuBackend(const BackendOptions& opts) : par_(opts.parallel) {
  CpuModelFiles m = load_cpu_model(opts);
  cfg_ = std::move(m.config);
  start(m.weights, opts);
}

ParallelCpuBackend::ParallelCpuBackend(const ModelConfig& c, const HostWeights& w, const BackendOptions& opts)
    : cfg_(c), par_(opts.parallel) {
  cfg_.moe.biased_weights = cfg_.moe.biased_weights || opts.biased_moe_weights;
  start(w, opts);
}

void ParallelCpuBackend::start(const HostWeights& w, const BackendOptions& opts) {
  par_.validate(cfg_);
  const int n = par_.world_size();
  if (par_.nnodes == 1) {
    group_ = std::make_unique<InProcessGroup>(n);
  } else {
    group_ = join_nodes(par_, group_fingerprint(opts, cfg_), {}, "cpu parallel");
  }
  // The snapshot budget is the whole group's: each rank sizes its pool with its share (same count on all).
  BackendOptions rank_opts = opts;
  if (opts.num_snapshots < 0)
    rank_opts.snapshot_memory_gib = (opts.snapshot_memory_gib > 0 ? opts.snapshot_memory_gib : kCpuSnapshotGiBDefault) / n;
  for (int r = group_->first_local(); r < group_->first_local() + group_->local_size(); ++r) {
    const ShardSpec s = par_.shard(r);
    ranks_.push_back(std::make_unique<CpuBackend>(shard_config(cfg_, s), shard_host_weights(cfg_, w, s), rank_opts,
                                                  ModelShard{s, &group_->comm(r)}));
  }
  penalties_ = std::make_unique<PenaltyTracker>(cfg_.vocab_size);
  threads_ = std::make_unique<RankThreads>(*group_, "cpu parallel backend",
                                           [this](int r, const ForwardBatch& b) { return step(r, b).nonfinite_snapshots; });
  SPDLOG_INFO("cpu parallel: {} over {} rank threads ({})", par_.describe(), group_->local_size(),
              par_.nnodes == 1 ? "in-process communicator" : "TCP group of the nodes");
}

ParallelCpuBackend::~ParallelCpuBackend() { threads_->stop(); }  // before the ranks go

std::string ParallelCpuBackend::device_name() const {
  return fmt::format("cpu ({}, {} rank threads, {} worker threads, fp32)", par_.describe(), group_->local_size(),
                     num_threads());
}

StepResult ParallelCpuBackend::step(int r, const ForwardBatch& batch) {
  StepPlan p;
  p.batch = batch;
  p.return_logits = true;  // nothing sampled on a rank: the parallel backend samples rank 0's logits
  return ranks_[size_t(r - group_->first_local())]->execute(p);
}

void ParallelCpuBackend::run_worker_node() {
  SPDLOG_INFO("cpu parallel: node {} runs ranks {}..{} until node 0 stops them", par_.node_rank, group_->first_local(),
              group_->first_local() + group_->local_size() - 1);
  threads_->wait();
}

StepResult ParallelCpuBackend::execute(const StepPlan& plan) {
  DS_CHECK(group_->is_local(0), "cpu parallel backend: node {} runs no engine (node 0 does)", par_.node_rank);
  threads_->check();
  check_sampling_rows(plan);
  // A bad plan fails here, on rank 0 alone, before the other ranks see it (the group stays usable).
  CpuBackend& r0 = *ranks_.front();
  r0.model().validate(plan.batch, r0.kda_states(), r0.mla_cache());
  penalties_->release(plan.released);
  StepResult res;
  std::vector<int32_t> nonfinite = threads_->step(plan.batch, [&] {
    res = step(0, plan.batch);
    return res.nonfinite_snapshots;
  });
  res.nonfinite_snapshots = std::move(nonfinite);
  if (!plan.sampling.empty()) {
    if (plan.masks) plan.masks->wait();
    res.samples = sample_rows_cpu(res.logits.data(), cfg_.vocab_size, plan.sampling, *penalties_, plan.masks.get());
  }
  if (!plan.return_logits) res.logits.clear();
  return res;
}

}  // namespace ds
