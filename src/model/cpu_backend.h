// The CPU backend: a Kimi-Linear checkpoint (or dummy weights) converted to fp32 and computed exactly
// on the host, with its KDA state slots and paged MLA latent cache in host memory.
//
// Cache capacity comes from BackendOptions: max_num_seqs state slots; num_snapshots KDA snapshots (-1:
// as many as snapshot_memory_gib holds, 1 GiB by default, at most 4096);
// num_blocks pages of block_size tokens (num_blocks 0: kv_cache_tokens, else max_num_seqs ×
// max_model_len capped at 131072 tokens). A step has no token limit (limits().max_tokens_per_step 0).
// Pools are calloc'ed, so untouched capacity costs no memory.
#pragma once
#include <memory>
#include <vector>

#include "model/backend.h"
#include "model/host_weights.h"
#include "model/kda_state.h"
#include "model/kimi_model.h"
#include "model/mla_cache.h"
#include "sampling/penalties.h"

namespace ds {

inline constexpr double kCpuSnapshotGiBDefault = 1.0;  // the snapshot pool's default budget on the host

class CpuBackend : public Backend {
 public:
  explicit CpuBackend(const BackendOptions& opts);
  // From a config and weights already in memory (tests; a rank of ParallelCpuBackend, with its shard:
  // c and weights are then the rank's shard_config and shard_host_weights).
  CpuBackend(const ModelConfig& c, HostWeights weights, const BackendOptions& opts, ModelShard shard = {});

  const ModelConfig& config() const override { return cfg_; }
  BackendLimits limits() const override { return limits_; }
  std::string device_name() const override;
  StepResult execute(const StepPlan& plan) override;

  // Numerical paths and tracing for tests; the trace (if set) is refilled by every step.
  void set_forward_options(const ForwardOptions& opts) { opts_ = opts; }
  void set_trace(ForwardTrace* trace) { trace_ = trace; }
  const KimiModel& model() const { return *model_; }
  KdaStateStore& kda_states() { return *kda_; }
  MlaLatentCache& mla_cache() { return *mla_; }

 private:
  void init(const BackendOptions& opts, ModelShard shard = {});
  int snapshots_in_budget(const BackendOptions& opts) const;  // num_snapshots -1

  ModelConfig cfg_;
  HostWeights weights_;
  std::unique_ptr<KimiModel> model_;
  std::unique_ptr<KdaStateStore> kda_;
  std::unique_ptr<MlaLatentCache> mla_;
  BackendLimits limits_;
  ForwardOptions opts_;
  ForwardTrace* trace_ = nullptr;
  std::unique_ptr<PenaltyTracker> penalties_;
};

// What CpuBackend(opts) loads: config.json (with the options' MoE quirk and quantization applied) and
// the fp32 weights (checkpoint or dummy, as opts.load_format says).
struct CpuModelFiles {
  ModelConfig config;
  HostWeights weights;
};
CpuModelFiles load_cpu_model(const BackendOptions& opts);

std::unique_ptr<Backend> make_cpu_backend(const BackendOptions& opts);

}  // namespace ds
