// MoE FFN on the CPU (spec §6): sigmoid router with correction bias for selection, grouped top-k,
// renormalised and scaled weights (or the remote code's biased weights, MoeConfig::biased_weights),
// routed experts, plus the shared experts added after the weighted sum.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "config/model_config.h"
#include "model/dense_mlp.h"
#include "model/host_weights.h"
#include "model/step_context.h"

namespace ds {

class MoeLayer {
 public:
  MoeLayer(const ModelConfig& c, const MoeWeights<HostTensor>& w, int layer);
  // x: [T, hidden] normalised input; y: [T, hidden], overwritten.
  void forward(const StepContext& ctx, const float* x, float* y) const;

 private:
  MoeConfig cfg_;
  int layer_;
  int64_t hidden_;
  const MoeWeights<HostTensor>* w_;
  std::vector<const float*> w1_, w2_, w3_;  // [E] expert weight pointers
  std::unique_ptr<DenseMlp> shared_;        // null when num_shared_experts == 0
};

}  // namespace ds
