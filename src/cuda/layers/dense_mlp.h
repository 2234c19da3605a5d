// The dense SwiGLU MLP on the GPU (the CPU twin is model/dense_mlp.h): h += down(silu(gate x) * up x),
// gate_up holding [gate; up] rows. Also the MoE layer's unfolded shared experts (run_mlp).
#pragma once
#include "cuda/layers/layer_step.h"

namespace ds::gpu {

// h += down(silu(gate x) * up x) for all T tokens; gate_up holds [gate; up] rows of width I.
void run_mlp(const LayerStep& s, const WeightView& gate_up, const WeightView& down, int I, int T, LayerInput in);

class DenseMlp final : public LayerPart {
 public:
  DenseMlp(DType act, const FfnWeights& w, int layer);
  void forward(const LayerStep& s, LayerInput in) const override;

 private:
  WeightView gate_up_, down_;
  int inter_;
};

}  // namespace ds::gpu
