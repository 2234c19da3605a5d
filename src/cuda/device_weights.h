// The model's weights on the GPU, packed for the kernels that read them (one GEMM per layer input):
//   KDA: in_proj = [q | k | v | f_a | g_a | b] rows, conv taps [q | k | v] channels;
//   MLA: in_proj = [q | kv_a] rows;  FFN: gate_up = [gate | up] rows;
//   MoE: experts_gate_up [E(+1), 2I, hidden], experts_down [E(+1), hidden, I], the single shared
//        expert folded in as expert E (it then rides the same grouped GEMM with weight 1).
// Matrices, norms and conv taps are in the activation dtype (bf16, or fp32 for exactness tests);
// A_log, dt_bias and the correction bias are fp32. Filled from a safetensors checkpoint through the
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

struct KdaLayerWeights {
  void* in_proj = nullptr;    // [kda_in_proj_rows, hidden]: q | k | v | f_a | g_a | b | zero padding
  void* conv = nullptr;       // [3HK, W]
  float* a_log = nullptr;     // [H]
  float* dt_bias = nullptr;   // [HK]
  void* f_b = nullptr;        // [HK, K]
  void* g_b = nullptr;        // [HK, K]
  void* o_norm = nullptr;     // [K]
  void* o_proj = nullptr;     // [hidden, HK]
};

struct MlaLayerWeights {
  void* in_proj = nullptr;    // [Hm(dn+dr) + R + dr, hidden]
  void* kv_a_norm = nullptr;  // [R]
  void* kv_b = nullptr;       // [Hm(dn+dv), R]: per head dn rows of W_UK then dv rows of W_UV
  void* w_uk_t = nullptr;     // [Hm, R, dn]: W_UK^h transposed (derived at load; absorbed queries by GEMV)
  void* o_proj = nullptr;     // [hidden, Hm dv]
};

struct FfnWeights {
  bool moe = false;
  // dense MLP (and a shared MLP that is not folded: num_shared_experts > 1)
  void* gate_up = nullptr;          // [2I, hidden]
  void* down = nullptr;             // [hidden, I]
  int inter = 0;                    // I of gate_up/down (0: none)
  // MoE
  void* router = nullptr;           // [E, hidden]
  float* bias = nullptr;            // [E]
  void* experts_gate_up = nullptr;  // [E + folded, 2 Ie, hidden]
  void* experts_down = nullptr;     // [E + folded, hidden, Ie]
  bool shared_folded = false;       // the shared expert is expert E
};

struct LayerWeightsDev {
  void* input_norm = nullptr;  // [hidden]
  void* post_norm = nullptr;   // [hidden]
  KdaLayerWeights kda;
  MlaLayerWeights mla;
  FfnWeights ffn;
};

struct DeviceWeights {
  DType dtype = DType::BF16;  // of matrices / norms / conv taps
  void* embed = nullptr;      // [vocab, hidden]
  void* final_norm = nullptr; // [hidden]
  void* lm_head = nullptr;    // [vocab, hidden] (embed when tied)
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
