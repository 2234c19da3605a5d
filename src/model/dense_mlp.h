// SwiGLU MLP on the CPU: y = down(silu(gate x) ⊙ up x). The dense FFN of the first layers and the
// MoE shared experts (intermediate = moe_intermediate_size × num_shared_experts).
#pragma once
#include <cstdint>

#include "model/host_weights.h"

namespace ds {

class DenseMlp {
 public:
  DenseMlp(const MlpWeights<HostTensor>& w, int64_t hidden);
  // x: [T, hidden]; y: [T, hidden], overwritten, or added to when `accumulate`.
  void forward(int64_t T, const float* x, float* y, bool accumulate = false) const;

 private:
  const MlpWeights<HostTensor>* w_;
  int64_t hidden_, inter_;
};

}  // namespace ds
