// NoPE MLA attention layer on the CPU (spec §5): q_proj, kv_a_proj → kv_a_layernorm (eps 1e-6) on the
// 512-wide latent → the latents [ĉ ; k_pe] of the new tokens are written to the paged cache → attention
// → o_proj. Multi-token slices use the expanded form by default (K/V re-expanded through kv_b_proj from
// every cached latent of the sequence, so later prefill chunks see earlier ones; the context is expanded
// and attended in pieces of ForwardOptions::mla_context_piece positions whose partial results merge
// exactly by log-sum-exp, so memory is bounded for any context); single tokens, or all
// slices with ForwardOptions::mla_absorbed_prefill, use the weight-absorbed form over the latents.
#pragma once
#include <cstdint>
#include <vector>

#include "config/model_config.h"
#include "model/host_weights.h"
#include "model/mla_cache.h"
#include "model/step_context.h"

namespace ds {

class MlaLayer {
 public:
  // mla_index: the layer's index among MLA layers (its pool in the latent cache).
  MlaLayer(const ModelConfig& c, const MlaWeights<HostTensor>& w, int mla_index);
  // x: [T, hidden] normalised input; y: [T, hidden], overwritten.
  void forward(const StepContext& ctx, const float* x, float* y, MlaLatentCache& cache) const;

 private:
  void expanded(const StepContext& ctx, int s, const float* q, float* o, const MlaLatentCache& cache) const;
  void absorbed(const StepContext& ctx, const std::vector<int>& seqs, const float* q, float* o,
                const MlaLatentCache& cache) const;

  const MlaWeights<HostTensor>* w_;
  int index_;
  int64_t hidden_, H_, dn_, dr_, dv_, R_;
  float kv_eps_, scale_;
  std::vector<float> w_uk_t_;  // [H, R, dn]: per head W_UKᵀ, so q_lat = q_nope · W_UK is a GEMM
};

}  // namespace ds
