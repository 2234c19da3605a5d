// The model's weights on the GPU, packed for the kernels that read them (one GEMM per layer input):
//   KDA: in_proj = [q | k | v | f_a | g_a | b] rows, conv taps [q | k | v] channels;
//   MLA: in_proj = [q | kv_a] rows;  FFN: gate_up = [gate | up] rows;
//   MoE: experts_gate_up [E(+1), 2I, hidden], experts_down [E(+1), hidden, I], the single shared
//        expert folded in as expert E (it then rides the same grouped GEMM with weight 1).
// Matrices, norms and conv taps are WeightViews in the dtype the loader was asked for (today the
// activation dtype: bf16, or fp32 for exactness tests); A_log, dt_bias and the correction bias are fp32. Filled from a safetensors checkpoint through the
// model module's loader and name table (model/weights.h), or with random "dummy" weights generated on
// the GPU (the CPU backend's scheme: matrices std 0.02, norms 1, A_log = log U[1,16], dt_bias U[-4,-2],
// conv taps U[-0.5, 0.5], correction bias 0).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <vector>

#include "config/model_config.h"
#include "core/dtype.h"
#include "cuda/device_buffer.h"
#include "cuda/device_context.h"

namespace ds::gpu {

// One weight tensor on the device as the kernels see it. Activations and weights have independent
// dtypes in the model's code paths; today every kernel needs dtype == the activation dtype (require()
// says which tensor does not), quantized dtypes (FP8, INT4) will bring `scale` and their layouts.
enum class WeightLayout : uint8_t {
  RowMajor,  // [N, K], K contiguous (Linear weights; vectors)
};

struct WeightView {
  const void* ptr = nullptr;
  DType dtype = DType::BF16;
  const float* scale = nullptr;  // per-tensor/block scales of quantized weights (none today)
  WeightLayout layout = WeightLayout::RowMajor;

  explicit operator bool() const { return ptr != nullptr; }
  // The view `elems` elements further (a row block of a packed tensor).
  WeightView at(int64_t elems) const {
    WeightView v = *this;
    v.ptr = static_cast<const char*>(ptr) + elems * int64_t(dtype_size(dtype));
    return v;
  }
  // Throws a ds::Error naming `what` unless the kernels can read this weight with activations of `act`.
  void require(DType act, const std::string& what) const;
};

struct KdaLayerWeights {
  WeightView in_proj;         // [kda_in_proj_rows, hidden]: q | k | v | f_a | g_a | b | zero padding
  WeightView conv;            // [3HK, W]
  float* a_log = nullptr;     // [H] fp32
  float* dt_bias = nullptr;   // [HK] fp32
  WeightView f_b;             // [HK, K]
  WeightView g_b;             // [HK, K] (adjacent to f_b: one batched product)
  WeightView o_norm;          // [K]
  WeightView o_proj;          // [hidden, HK]
};

struct MlaLayerWeights {
  WeightView in_proj;         // [Hm(dn+dr) + R + dr, hidden]
  WeightView kv_a_norm;       // [R]
  WeightView kv_b;            // [Hm(dn+dv), R]: per head dn rows of W_UK then dv rows of W_UV
  WeightView w_uk_t;          // [Hm, R, dn]: W_UK^h transposed (derived at load; absorbed queries by GEMV)
  WeightView o_proj;          // [hidden, Hm dv]
};

struct FfnWeights {
  bool moe = false;
  // dense MLP (and a shared MLP that is not folded: num_shared_experts > 1)
  WeightView gate_up;               // [2I, hidden]
  WeightView down;                  // [hidden, I]
  int inter = 0;                    // I of gate_up/down (0: none)
  // MoE
  WeightView router;                // [E, hidden]
  float* bias = nullptr;            // [E] fp32
  WeightView experts_gate_up;       // [E + folded, 2 Ie, hidden]
  WeightView experts_down;          // [E + folded, hidden, Ie]
  bool shared_folded = false;       // the shared expert is expert E
};

struct LayerWeightsDev {
  WeightView input_norm;  // [hidden]
  WeightView post_norm;   // [hidden]
  KdaLayerWeights kda;
  MlaLayerWeights mla;
  FfnWeights ffn;
};

struct DeviceWeights {
  WeightView embed;       // [vocab, hidden]
  WeightView final_norm;  // [hidden]
  WeightView lm_head;     // [vocab, hidden] (embed when tied)
  std::vector<LayerWeightsDev> layers;
  std::vector<DeviceBuffer> storage;
  size_t bytes = 0;
};

// Rows of the packed KDA input projection: 3HK + 2K + H rounded up to a multiple of 8 (aligned rows).
int64_t kda_in_proj_rows(const ModelConfig& c);

struct WeightLoadOptions {
  std::string model_dir;
  bool dummy = false;
  uint64_t seed = 0;
};
// Allocates and fills the weights; logs bytes and time.
DeviceWeights load_device_weights(const ModelConfig& c, DType dtype, const WeightLoadOptions& o,
                                  const DeviceContext& ctx);

}  // namespace ds::gpu
