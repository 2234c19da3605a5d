// What one layer of the GPU model needs to run its part of a step: the device context, the step's
// metadata (device views of the batch layout), the activation buffers, the caches, the GEMM handle and
// the projection helper linear(). Built by CudaModel once per step (or graph capture); layers hold only
// their weights and shapes. Layers are called eagerly or under graph capture, so nothing a layer does
// allocates, synchronises or reads device memory on the host.
#pragma once
#include <cstdint>
#include <vector>

#include "config/model_config.h"
#include "core/dtype.h"
#include "cuda/device_caches.h"
#include "cuda/device_context.h"
#include "cuda/device_weights.h"
#include "cuda/gemm.h"
#include "cuda/kernels/gemv.h"
#include "cuda/kernels/moe_gemm.h"
#include "cuda/workspace.h"

namespace ds::gpu {

// Device views of a step's index arrays (see model/batch_layout.h for their meaning).
struct StepMeta {
  int T = 0, N = 0, R = 0, stride = 1, F = 0, row0 = 0;  // F: slots to zero
  int n_dec = 0;          // the first n_dec sequences/tokens are single-token decodes
  int max_q_len = 0, max_seq_len = 0;
  int mla_splits = 1;     // split-K of the MLA decode kernel
  bool mla_pipe = false;  // the Hopper MLA decode's pipelined form (choose_mla_decode_pipe)
  bool pure_decode = false;
  const int32_t *tokens = nullptr, *token_seq = nullptr, *token_pos = nullptr, *slot_mapping = nullptr;
  const int32_t *cu_seqlens = nullptr, *slots = nullptr, *seq_lens = nullptr, *block_tables = nullptr;
  const int32_t *logit_rows = nullptr, *zero_slots = nullptr;
  const uint8_t* fresh = nullptr;  // [N]
  const int32_t *pre_cu_q = nullptr, *pre_cu_k = nullptr;
  // Host: the MLA prefill plan (plan_mla_prefill). The prefill sequences in groups whose keys fit the
  // MLA expansion (MlaExpansion::key_rows) together: sequences [seq0, seq1) of the prefill batch, key
  // offsets [key0, key0 + keys) of pre_cu_k; a sequence whose keys alone exceed it is a group of its own
  // attended piece by piece (pieces: its queries are rows [q0, q0 + q_len) of pre_cu_q).
  struct PrefillGroup {
    int seq0 = 0, seq1 = 0, key0 = 0, keys = 0;
    int q0 = 0, q_len = 0;
    bool pieces = false;
  };
  std::vector<PrefillGroup> prefill_groups;
};

// The groups above for prefill sequences with query offsets pre_cu_q and key offsets pre_cu_k (host,
// num_prefill + 1 entries each) and an expansion of piece_keys key rows.
std::vector<StepMeta::PrefillGroup> plan_mla_prefill(const std::vector<int32_t>& pre_cu_q,
                                                     const std::vector<int32_t>& pre_cu_k, int piece_keys);

// A normalised layer input: x itself, or (small batches) h with the norm weight its GEMVs apply; with x, its
// split for the FP8 tensor cores when the norm wrote one (m.T rows of hidden columns; RmsNormParams::split), which
// the FP8 tile launches reading x take instead of splitting x again.
struct LayerInput {
  const void* x;
  const void* norm;
  const void* split = nullptr;
};

constexpr int kGemvMaxRows = 8;  // up to this many rows a projection streams its weights once (GEMV)
constexpr int kFp8GemvMaxRows = 8;  // FP8 projections: the FP8 GEMV up to here (measured on the H200: the
                                    // FP8 GEMV at 8 rows takes 0.083 ms on the KDA in_proj, so two passes at
                                    // 16 rows lose)
constexpr int kMoeFoldMaxRows = 32;  // up to this many tokens the shared expert runs as one more expert of the
                                     // routed launches (no dense MLP launches of its own)

struct LayerStep {
  const DeviceContext& ctx;
  const ModelConfig& cfg;
  DType act;                   // activation dtype
  const StepMeta& m;
  Activations& ws;
  const MlaExpansion& expand;  // MLA prefill key expansion buffers (one context piece)
  DeviceCaches& caches;
  Gemm& gemm;
  bool reference_attention = false;  // the simple attention kernels (attn_ref.h)
  bool biased_moe_weights = false;
  const int32_t* forced_ids = nullptr;  // [layers][T][top_k] pinned MoE routes (tests), or null
  void* dequant_scratch = nullptr;      // FP8 projections at more than kFp8GemvMaxRows rows: the weights
                                        // dequantized here (act dtype) for cuBLASLt (DeviceWeights sizes it)
  // Where a part adds its output (its output projection, the MoE combine): ws.h, or for a rank of a
  // tensor-parallel group ws.rank_out, zeroed before the part and all-reduced into h after it (CudaModel).
  void* out = nullptr;

  // y = x . w^T through the small-M kernel or cuBLASLt; accumulate adds into y (act dtype). FP8 and
  // INT4 views: their GEMV up to kFp8GemvMaxRows rows, beyond, FP8 (and INT4 with switches.int4_dense) on the
  // tile kernel up to kFp8TileMaxRows where its x split applies, else dequantized into dequant_scratch and
  // cuBLASLt; a view's high-precision tail rows are a second product.
  // x_split: x's split (LayerInput::split; M rows of K columns), taken by the FP8 tile launch instead of its own.
  void linear(const void* x, int64_t ldx, const WeightView& w, int N, int K, void* y, int64_t ldy, int M,
              bool accumulate, bool out_f32 = false, const void* norm = nullptr,
              const int32_t* x_rows = nullptr, const void* x_split = nullptr) const;
  // RMSNorm of `rows` rows of `dim` values (x, ldx apart) with `weight` into ws.x (rows `dim` apart); returns
  // ws.x. Where a GEMV would have fused the norm but a tensor-core kernel reads the rows. With `split`, the norm
  // also writes ws.x's split there (RmsNormParams::split).
  const void* norm_into_x(const void* x, int64_t ldx, const void* weight, int rows, int dim,
                          void* split = nullptr) const;
  // linear() on cuBLASLt's block-scaled FP8 GEMM (ctx.switches.fp8_cublas): false where it does not apply.
  bool linear_fp8_cublas(const void* x, int64_t ldx, const WeightView& w, int N, int K, void* y, int64_t ldy, int M,
                         bool accumulate) const;
};

// Points g (GemvParams or MoeGemmParams) at the weights of `w`: its pointer and, for FP8 views, its
// scales; matrices of a batched or grouped view are `rows_per_matrix` rows apart (their scales follow).
template <class P>
void set_gemv_weights(P& g, const WeightView& w, int64_t rows_per_matrix = 0) {
  g.w = w.ptr;
  g.w_scale = nullptr;
  if constexpr (requires { g.w_int4; }) {  // GEMVs and the MoE GEMM's x-split wgmma form take INT4 views
    g.w_int4 = w.int4();
    g.w_zero = w.zero;
  }
  if (!w.fp8() && !w.int4()) return;
  g.w_scale = w.scale;
  g.scale_ld = w.scale_ld;
  g.scale_row_shift = w.scale_row_shift;
  g.scale_k_shift = w.scale_k_shift;
  g.scale_matrix_stride = (rows_per_matrix >> w.scale_row_shift) * w.scale_ld;
}

// One layer's attention or FFN half: h += f(input) (adding into LayerStep::out).
class LayerPart {
 public:
  virtual ~LayerPart() = default;
  virtual void forward(const LayerStep& s, LayerInput in) const = 0;
};

// `elems` elements of dtype t past p.
inline char* off(void* p, int64_t elems, DType t) { return static_cast<char*>(p) + elems * int64_t(dtype_size(t)); }
inline const char* off(const void* p, int64_t elems, DType t) {
  return static_cast<const char*>(p) + elems * int64_t(dtype_size(t));
}

}  // namespace ds::gpu
