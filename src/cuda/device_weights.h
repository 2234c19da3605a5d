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
#include "dist/parallel_config.h"
#include "cuda/device_buffer.h"
#include "cuda/device_context.h"

namespace ds::gpu {

// One weight tensor on the device as the kernels see it. Activations and weights have independent
// dtypes: a view is in the activation dtype, or (the Linear projections listed in model/quant.h's
// fp8_on_device) FP8 e4m3 with fp32 scales: element (r, k) = e4m3 * scale[(r >> scale_row_shift) *
// scale_ld + (k >> scale_k_shift)] (per channel: shifts 0 and 31, ld 1; blocks: log2 of the block).
// A packed projection whose last rows stay in the activation dtype (b_proj, kv_a_proj_with_mqa) keeps
// them at `tail`. INT4 W4A16 views (the experts of an INT4 checkpoint or of dummy INT4 weights;
// dtype U8 so that a kernel expecting the activation dtype refuses them): `ptr` holds nibbles [rows,
// cols / 2] bytes, `scale` fp32 [rows, scale_ld] per group of 2^scale_k_shift columns, `zero` fp32 in the
// same layout or null (symmetric: 8); see GemvParams::w_int4. require() says which tensor a kernel
// cannot read.
enum class WeightLayout : uint8_t {
  RowMajor,  // [N, K], K contiguous (Linear weights; vectors)
};

struct WeightView {
  const void* ptr = nullptr;
  DType dtype = DType::BF16;
  const float* scale = nullptr;  // FP8: the scales (see above)
  WeightLayout layout = WeightLayout::RowMajor;
  int64_t cols = 0;              // FP8: K (each row is `cols` bytes)
  int64_t scale_ld = 1;
  int scale_row_shift = 0, scale_k_shift = 31;
  const void* tail = nullptr;    // rows [tail_row0, N) in the activation dtype, [N - tail_row0, cols]
  int tail_row0 = 0;
  const float* zero = nullptr;   // INT4: zero points (null: symmetric)
  bool packed_int4 = false;      // INT4 W4A16 (see above)

  explicit operator bool() const { return ptr != nullptr; }
  bool fp8() const { return dtype == DType::F8_E4M3; }
  bool int4() const { return packed_int4; }
  // The view `elems` elements further (a row block of a packed tensor; FP8: whole scale blocks of rows).
  WeightView at(int64_t elems) const;
  // Throws a ds::Error naming `what` unless the kernels can read this weight with activations of `act`
  // (FP8 and INT4 only where the caller's kernels take them: fp8_ok).
  void require(DType act, const std::string& what, bool fp8_ok = false) const;
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
  WeightView experts_gate_up;       // [E + folded, 2 Ie, hidden] (expert parallelism: the local experts only)
  WeightView experts_down;          // [E + folded, hidden, Ie]
  bool shared_folded = false;       // the shared expert is expert E
  // Expert parallelism: the rank holds experts [expert_begin, expert_begin + local_experts) as its experts
  // 0.. (the shared expert's slice is then gate_up/down, not folded); 0: every expert.
  int expert_begin = 0, local_experts = 0;
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
  WeightView lm_head;     // [lm_head_rows, hidden] (embed when tied)
  int64_t lm_head_rows = 0;  // the vocabulary rows held: all of them, or (tensor parallelism, untied) the
                             // rank's vocab / tp rows [rank·vocab/tp, ...), whose logits the ranks gather
  std::vector<LayerWeightsDev> layers;
  std::vector<DeviceBuffer> storage;
  size_t bytes = 0;
  size_t fp8_bytes = 0, scale_bytes = 0;  // of `bytes`: FP8 weights and their scales
  int fp8_matrices = 0;                   // packed views in FP8
  size_t int4_bytes = 0, int4_scale_bytes = 0;  // of `bytes`: INT4 nibbles, their scales and zero points
  int int4_matrices = 0;                  // packed views in INT4 (the experts, and with switches.int4_dense:)
  int int4_dense_matrices = 0;            // of them, dense projections (attention, dense and unfolded shared MLPs)
  std::string format;                     // e.g. "bf16" or "fp8 e4m3, 128x128 block scales (online) + bf16"
  void* dequant_scratch = nullptr;        // the largest dense FP8 projection in the activation dtype (prefill
                                          // and large batches dequantize into it for cuBLASLt; in `bytes`)
};

// Rows of the packed KDA input projection: 3HK + 2K + H rounded up to a multiple of 8 (aligned rows).
int64_t kda_in_proj_rows(const ModelConfig& c);

struct WeightLoadOptions {
  std::string model_dir;
  bool dummy = false;
  uint64_t seed = 0;
  // Tensor / expert parallelism: the whole model's config and this rank's part (model/shard_weights.h's
  // plan; the config given to load_device_weights is then the rank's, with the whole model's
  // tie_word_embeddings; an untied lm_head is cut by vocabulary rows, a tied one stays the whole embedding).
  // Each tensor is cut from the checkpoint's whole
  // one; dummy weights take the whole dummy tensor's values at the rank's elements (the ranks together
  // hold exactly the single-rank dummy model). Quantized weights are not sharded (an error).
  const ModelConfig* full = nullptr;
  ShardSpec shard;
};
// Allocates and fills the weights; logs bytes and time. c.quant says whether the checkpoint is FP8 or
// is quantized at load ("online", per 128x128 block on the GPU, the rule of model/quant.h); with
// `dummy` and c.quant set, the FP8 views get random FP8 weights and constant scales.
DeviceWeights load_device_weights(const ModelConfig& c, DType dtype, const WeightLoadOptions& o,
                                  const DeviceContext& ctx);

}  // namespace ds::gpu
