#include "model/parallel_cpu_backend.h"

#include <algorithm>

#include "core/error.h"
#include "core/log.h"
#include "core/parallel.h"
#include "dist/batch_codec.h"
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
  group_ = std::make_unique<InProcessGroup>(n);
  // The snapshot budget is the whole group's: each rank sizes its pool with its share (same count on all).
  BackendOptions rank_opts = opts;
  if (opts.num_snapshots < 0)
    rank_opts.snapshot_memory_gib = (opts.snapshot_memory_gib > 0 ? opts.snapshot_memory_gib : kCpuSnapshotGiBDefault) / n;
  for (int r = 0; r < n; ++r) {
    const ShardSpec s = par_.shard(r);
    ranks_.push_back(std::make_unique<CpuBackend>(shard_config(cfg_, s), shard_host_weights(cfg_, w, s), rank_opts,
                                                  ModelShard{s, &group_->comm(r)}));
  }
  nonfinite_.resize(size_t(n));
  penalties_ = std::make_unique<PenaltyTracker>(cfg_.vocab_size);
  for (int r = 1; r < n; ++r) threads_.emplace_back([this, r] { rank_loop(r); });
  SPDLOG_INFO("cpu parallel: {} over {} rank threads (in-process communicator)", par_.describe(), n);
}

ParallelCpuBackend::~ParallelCpuBackend() {
  if (!group_->aborted()) {
    try {
      RankMessage m;
      m.command = RankCommand::Stop;
      std::vector<uint8_t> stop = encode_rank_message(m);
      broadcast_bytes(group_->comm(0), stop, 0);
    } catch (const std::exception& e) {
      group_->abort(e.what());
    }
  }
  for (auto& t : threads_) t.join();
}

std::string ParallelCpuBackend::device_name() const {
  return fmt::format("cpu ({}, {} rank threads, {} worker threads, fp32)", par_.describe(), world_size(),
                     num_threads());
}

void ParallelCpuBackend::record_failure(int r, const std::string& what) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (failure_.empty()) failure_ = fmt::format("rank {}: {}", r, what);
  }
  group_->abort(failure());
}

std::string ParallelCpuBackend::failure() const {
  std::lock_guard<std::mutex> lk(mu_);
  return failure_;
}

StepResult ParallelCpuBackend::step(int r, const ForwardBatch& batch) {
  StepPlan p;
  p.batch = batch;
  p.return_logits = true;  // nothing sampled on a rank: the parallel backend samples rank 0's logits
  StepResult out = ranks_[size_t(r)]->execute(p);
  nonfinite_[size_t(r)] = std::move(out.nonfinite_snapshots);
  group_->comm(r).barrier();  // every rank has finished the step (and written nonfinite_)
  return out;
}

void ParallelCpuBackend::rank_loop(int r) {
  Communicator& comm = group_->comm(r);
  for (;;) {
    try {
      std::vector<uint8_t> msg;
      broadcast_bytes(comm, msg, 0);
      RankMessage m = decode_rank_message(msg);
      if (m.command == RankCommand::Stop) return;
      step(r, m.batch);
    } catch (const std::exception& e) {
      record_failure(r, e.what());
      return;
    }
  }
}

StepResult ParallelCpuBackend::execute(const StepPlan& plan) {
  if (std::string f = failure(); !f.empty()) fail("cpu parallel backend: a previous step failed on {}", f);
  check_sampling_rows(plan);
  // A bad plan fails here, on rank 0 alone, before the other ranks see it (the group stays usable).
  CpuBackend& r0 = *ranks_.front();
  r0.model().validate(plan.batch, r0.kda_states(), r0.mla_cache());
  penalties_->release(plan.released);
  StepResult res;
  try {
    std::vector<uint8_t> msg = encode_rank_message({.command = RankCommand::Step, .batch = plan.batch});
    broadcast_bytes(group_->comm(0), msg, 0);
    res = step(0, plan.batch);
  } catch (const std::exception& e) {
    record_failure(0, e.what());
    fail("cpu parallel backend: the step failed on {}", failure());
  }
  // A snapshot is non-finite when any rank's heads are.
  for (size_t r = 0; r < nonfinite_.size(); ++r)
    res.nonfinite_snapshots.insert(res.nonfinite_snapshots.end(), nonfinite_[r].begin(), nonfinite_[r].end());
  std::sort(res.nonfinite_snapshots.begin(), res.nonfinite_snapshots.end());
  res.nonfinite_snapshots.erase(std::unique(res.nonfinite_snapshots.begin(), res.nonfinite_snapshots.end()),
                                res.nonfinite_snapshots.end());
  if (!plan.sampling.empty()) {
    if (plan.masks) plan.masks->wait();
    res.samples = sample_rows_cpu(res.logits.data(), cfg_.vocab_size, plan.sampling, *penalties_, plan.masks.get());
  }
  if (!plan.return_logits) res.logits.clear();
  return res;
}

}  // namespace ds
