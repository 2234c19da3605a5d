// KDA attention layer on the CPU (spec §4): q/k/v projections → depthwise causal conv + SiLU (tails in
// the state slot) → softplus forget gate g and β → KDA recurrence (chunked form for multi-token slices,
// token-by-token for single tokens) → gated RMSNorm with sigmoid(g_b(g_a x)) → o_proj.
// The layer holds weights only; conv tails and recurrent states live in the KdaStateStore.
#pragma once
#include <cstdint>

#include "config/model_config.h"
#include "model/host_weights.h"
#include "model/kda_state.h"
#include "model/step_context.h"

namespace ds {

class KdaLayer {
 public:
  // kda_index: the layer's index among KDA layers (its pools in the state store).
  KdaLayer(const ModelConfig& c, const KdaWeights<HostTensor>& w, int kda_index);
  // x: [T, hidden] normalised input; y: [T, hidden], overwritten.
  void forward(const StepContext& ctx, const float* x, float* y, KdaStateStore& states) const;

 private:
  const KdaWeights<HostTensor>* w_;
  int index_;
  int64_t hidden_, H_, K_, W_;
  float norm_eps_;
};

}  // namespace ds
