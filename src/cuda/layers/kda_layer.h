// KDA attention on the GPU (spec 4; the CPU twin is model/kda_layer.h): the packed input projection,
// the low-rank forget/output gates, the short convolution and gate (fused into the decode kernel for
// pure-decode steps), the chunked prefill / recurrent decode kernels over the layer's state slots, and
// the gated output norm + o_proj added into the residual.
#pragma once
#include "cuda/kernels/conv1d.h"
#include "cuda/kernels/delta_gate.h"
#include "cuda/layers/layer_step.h"

namespace ds::gpu {

class KdaLayer final : public LayerPart {
 public:
  // layer: the model's layer index (for error messages); kda_index: its index among KDA layers (its
  // state slots in DeviceCaches).
  KdaLayer(const ModelConfig& c, DType act, const KdaLayerWeights& w, int layer, int kda_index);
  void forward(const LayerStep& s, LayerInput in) const override;

 private:
  void gate_projections(const LayerStep& s) const;  // f_b(f_a x), g_b(g_a x) as one batch of two
  void attention(const LayerStep& s, const KdaGateParams& g, const Conv1dParams& c) const;
  void output(const LayerStep& s) const;            // gated RMSNorm, o_proj, += h
  KdaGateParams gate_params(const LayerStep& s) const;
  Conv1dParams conv_params(const LayerStep& s) const;

  KdaLayerWeights w_;
  int index_;
  int hid_, H_, K_, HK_, Wc_, P_;
};

}  // namespace ds::gpu
