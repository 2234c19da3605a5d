// The MoE FFN on the GPU (spec 6; the CPU twin is model/moe_layer.h): router GEMV/GEMM, grouped top-k
// routing + token permutation, the grouped expert GEMMs (GEMV at decode sizes, tensor cores beyond),
// the weighted combine into the residual, and the shared expert (folded in as expert E for small
// batches, or a dense MLP).
#pragma once
#include "cuda/layers/layer_step.h"

namespace ds::gpu {

class MoeLayer final : public LayerPart {
 public:
  MoeLayer(const ModelConfig& c, DType act, const FfnWeights& w, int layer);
  void forward(const LayerStep& s, LayerInput in) const override;

 private:
  FfnWeights w_;
  int layer_;
};

}  // namespace ds::gpu
