// The CPU backend: a Kimi-Linear checkpoint (or dummy weights) converted to fp32 and computed exactly
// on the host, with its KDA state slots and paged MLA latent cache in host memory.
//
// Cache capacity comes from BackendOptions: max_num_seqs state slots; num_blocks pages of block_size
// tokens (num_blocks 0: kv_cache_tokens, else max_num_seqs × max_model_len capped at 131072 tokens).
// Pools are calloc'ed, so untouched capacity costs no memory.
#pragma once
#include <memory>
#include <vector>

#include "model/backend.h"
#include "model/host_weights.h"
#include "model/kda_state.h"
#include "model/kimi_model.h"
#include "model/mla_cache.h"

namespace ds {

class CpuBackend : public Backend {
 public:
  explicit CpuBackend(const BackendOptions& opts);
  // From a config and weights already in memory (tests).
  CpuBackend(const ModelConfig& c, HostWeights weights, const BackendOptions& opts);

  const ModelConfig& config() const override { return cfg_; }
  CacheGeometry cache_geometry() const override { return geometry_; }
  std::string device_name() const override;
  void forward(const ForwardBatch& batch) override;
  void get_logits(std::vector<float>* out) override;
  std::vector<SampleResult> sample(const std::vector<SampleParams>& params) override;

  // Numerical paths and tracing for tests; the trace (if set) is refilled by every forward.
  void set_forward_options(const ForwardOptions& opts) { opts_ = opts; }
  void set_trace(ForwardTrace* trace) { trace_ = trace; }
  const KimiModel& model() const { return *model_; }
  KdaStateStore& kda_states() { return *kda_; }
  MlaLatentCache& mla_cache() { return *mla_; }

 private:
  void init(const BackendOptions& opts);

  ModelConfig cfg_;
  HostWeights weights_;
  std::unique_ptr<KimiModel> model_;
  std::unique_ptr<KdaStateStore> kda_;
  std::unique_ptr<MlaLatentCache> mla_;
  CacheGeometry geometry_;
  ForwardOptions opts_;
  ForwardTrace* trace_ = nullptr;
  std::vector<float> logits_;
  int logit_rows_ = 0;
};

std::unique_ptr<Backend> make_cpu_backend(const BackendOptions& opts);

}  // namespace ds
