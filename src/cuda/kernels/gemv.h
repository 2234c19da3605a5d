// Small-M grouped GEMM ("GEMV") for decode-sized batches: y = x . W^T with few rows of x per weight
// matrix, streaming each weight row once per 8 rows of x. Used for dense projections at M <= 8 and for
// the MoE experts (one row group per active expert, reading ONLY the routed experts' weights). A row
// group is a run of x rows multiplied by one weight matrix (a head of a batched projection, an expert).
// Weights are [matrices][rows][K] (K contiguous) in the activation dtype, or FP8 e4m3 with scales
// (w_scale; any number of rows, every epilogue and prologue), or packed INT4 with group scales and zero
// points (w_int4; the same cases); accumulation is fp32.
// CPU twin: src/kernels/gemm (run_gemm_cpu).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"
#include "cuda/device_context.h"

namespace ds::gpu {

enum class GemvEpilogue : uint8_t {
  Store,       // y[r, n] = acc(n)
  SiluMul,     // weights hold 2N rows [gate; up]: y[r, n] = silu(acc(n)) * acc(N + n)
  Accumulate,  // y[r, n] += acc(n)   (residual add; y in the activation dtype)
};

struct GemvParams {
  // Row r (0-based, global over groups) of group i reads x row x_rows[r] (or r when x_rows is null)
  // from x + i * x_group_stride, and writes y row r of y + i * y_group_stride.
  const void* x = nullptr;             // [*, ldx] act dtype
  int64_t ldx = 0, x_group_stride = 0;
  const int32_t* x_rows = nullptr;     // [total rows] optional gather
  const void* w = nullptr;             // [matrices, rows_w, K] act dtype (rows_w = N, or 2N for SiluMul)
  int64_t w_matrix_stride = 0;         // elements between weight matrices
  void* y = nullptr;                   // [*, ldy] act dtype, or fp32 when y_f32
  int64_t ldy = 0, y_group_stride = 0;
  bool y_f32 = false;
  int N = 0, K = 0;                    // output columns; K a multiple of 8
  int num_groups = 1;                  // grid size over row groups (static upper bound)
  const int32_t* group_weight = nullptr;  // [num_groups] weight matrix of each group (null: the group index)
  // With group_weight: group known_group is known on the host to use weight matrix known_weight (the
  // shared expert's pair at batch 1), so a kernel may request its weights before waiting on the kernel
  // that writes group_weight (a hint: the group's rows and x still come from the device arrays).
  int known_group = -1, known_weight = -1;
  const int32_t* group_start = nullptr;  // [num_groups+1] row ranges (null: every group has rows [0, M))
  const int32_t* num_active = nullptr;   // device scalar: groups >= *num_active do nothing (null: all)
  int M = 0;                             // rows per group when group_start is null
  GemvEpilogue epi = GemvEpilogue::Store;
  int max_rows = 8;    // host bound on the rows of any group (picks the kernel's x-tile height, <= 8)
  // Every row of every group reads the same x row (x_rows[0], or row 0): the one token of a batch-1 MoE layer.
  // A host promise the one-token kernels need (max_rows 1 alone allows each group a different row).
  bool x_row_shared = false;
  // Optional fused RMSNorm of the x rows as they are loaded: x <- round(x * rsqrt(mean(x^2) + eps) * w),
  // exactly what run_rmsnorm would have written (needs the whole row in the x tile: K <= 12288 bf16).
  const void* norm_weight = nullptr;   // [K] act dtype (gated: [gate_head_dim])
  float norm_eps = 1e-5f;
  // With `gate` set, the fused norm is the KDA output norm instead: per head of gate_head_dim values,
  // x <- round(rmsnorm(x_head) * norm_weight * sigmoid(gate_head)) (gated_rmsnorm's math; x rows not
  // gathered). gate row r is at gate + r * ld_gate.
  const void* gate = nullptr;          // act dtype
  int64_t ld_gate = 0;
  int gate_head_dim = 0;
  bool stream_hint = false;            // weight loads with L1::no_allocate + L2::256B prefetch (measured:
                                       // no gain at decode shapes, -5% on lm_head)
  int row_pairs = 0;       // weight-row pairs each warp streams (0: choose_gemv_row_pairs)
  bool split_k = true;     // M = 1, small N, wide K: K split over a block's warps (gemv.cu use_splitk)
  bool async_stream = true;  // bf16, one row per group: weights streamed with cp.async into a shared ring
  bool pipelined = true;  // request the first weights before the x tile's prologue (and, for dense
                          // weights, before PDL's wait) when K fits the x tile; false: the plain loop
  // FP8 weights (w_scale set; gemv_fp8.cu): w holds e4m3fn bytes [matrices, rows_w, K] (K a multiple of
  // 16) and weight (r, k) of matrix m is e4m3(w) * w_scale[m * scale_matrix_stride +
  // (r >> scale_row_shift) * scale_ld + (k >> scale_k_shift)] (per channel: shifts 0 and 31, ld 1; a
  // scale block is at least 16 columns wide).
  const float* w_scale = nullptr;
  int64_t scale_matrix_stride = 0, scale_ld = 1;
  int scale_row_shift = 0, scale_k_shift = 31;
  // INT4 W4A16 weights (w_int4; gemv_int4.cu): w holds nibbles, [matrices, rows_w, K / 2] bytes, weight
  // k of a row in the low nibble of byte k / 2 when k is even (the compressed-tensors words, little-endian),
  // and weight (r, k) of matrix m is (nibble - zero) * scale with scale = w_scale[m * scale_matrix_stride +
  // (r >> scale_row_shift) * scale_ld + (k >> scale_k_shift)] (groups: row shift 0, k shift log2(group)
  // >= 5) and zero = w_zero at the same index (null: 8, the symmetric offset). w_matrix_stride counts
  // weights (bytes x 2); K a multiple of 32.
  bool w_int4 = false;
  const float* w_zero = nullptr;
};
void run_gemv(const GemvParams& p, DType act, const DeviceContext& ctx);
// Whether run_gemv takes p on the FP8 tensor-core GEMV (gemv_fp8_mma.cu): switches.fp8_mma_gemv, FP8 weights
// with scale blocks at least 64 columns wide, bf16 activations, one row per group, K a multiple of 64.
bool fp8_mma_gemv_applies(const GemvParams& p, DType act, const DeviceContext& ctx);
// Sets the kernels' shared-memory limits on ctx's device (configure_kernels calls it once per context).
void configure_gemv(const DeviceContext& ctx);

// The experts' down projection that follows a SiluMul gate/up GEMV: reads its output rows (no gather,
// no fused norm), weights [matrices, K_gate_up, N_gate_up], writes [rows, ldo] to `out`; groups carried over.
inline GemvParams moe_down_gemv_params(const GemvParams& gate_up, const void* w_down, void* out, int64_t ldo) {
  GemvParams d = gate_up;
  d.x = gate_up.y;
  d.ldx = gate_up.ldy;
  d.x_rows = nullptr;
  d.norm_weight = nullptr;
  d.gate = nullptr;
  d.w = w_down;
  d.w_matrix_stride = int64_t(gate_up.K) * gate_up.N;
  d.y = out;
  d.ldy = ldo;
  d.y_f32 = false;
  d.N = gate_up.K;
  d.K = gate_up.N;
  d.epi = GemvEpilogue::Store;
  return d;
}

// One token's MoE down projection and weighted combine in one launch (decode at batch 1):
//   residual[c] += sum_j weights[j] * (W[ids[j]] row c) . act[pair_pos[j]]
// for j < k (the routed experts plus a folded shared expert). A block owns two output columns across
// all k experts, so nothing is written per expert and no combine kernel runs. CPU twin: the MoE
// experts op (src/kernels/moe) on the same routing.
struct MoeDownCombineParams {
  const void* act = nullptr;         // [*, I] act dtype: the gate/up SiluMul output rows
  const int32_t* pair_pos = nullptr; // [k] row of act holding pair j
  const int32_t* ids = nullptr;      // [k] expert (weight matrix) of pair j
  const float* weights = nullptr;    // [k] combine weight of pair j
  const void* w = nullptr;           // [matrices, D, I] act dtype
  void* residual = nullptr;          // [D] act dtype, updated in place
  int D = 0, I = 0, k = 0;           // I a multiple of 8
  // Pair known_pair is known on the host to use expert known_expert (the shared expert at batch 1):
  // its weights may be read before the kernel waits on the routing (-1: none).
  int known_pair = -1, known_expert = -1;
  // FP8 experts (w_scale set): as GemvParams' FP8 fields (I a multiple of 16; gemv_fp8.cu)
  const float* w_scale = nullptr;
  int64_t scale_matrix_stride = 0, scale_ld = 1;
  int scale_row_shift = 0, scale_k_shift = 31;
  // INT4 experts (w_int4): as GemvParams' INT4 fields (w_scale and w_zero; I a multiple of 32)
  bool w_int4 = false;
  const float* w_zero = nullptr;
};
void run_moe_down_combine(const MoeDownCombineParams& p, DType act, const DeviceContext& ctx);
// Whether it takes p on the FP8 tensor cores (gemv_fp8_mma.cu; the conditions of fp8_mma_gemv_applies on I).
bool fp8_mma_down_combine_applies(const MoeDownCombineParams& p, DType act, const DeviceContext& ctx);
// Whether it takes p on the staged one-token kernel (moe_down_combine_staged.cu): switches.down_combine_staged,
// the per-pair kernels' conditions on I and the scales, and the columns' rows fitting a block's shared memory.
bool moe_down_combine_staged_applies(const MoeDownCombineParams& p, DType act, const DeviceContext& ctx);
// Whether run_gemv takes p on the staged one-token gate/up kernel (moe_gate_up_staged.cu): switches.gate_up_staged,
// a SiLU-mul launch of FP8 or INT4 weights with one row a group at most (max_rows 1), no KDA gate prologue.
bool moe_gate_up_staged_applies(const GemvParams& p, DType act, const DeviceContext& ctx);

// The down projection + combine that follows a SiluMul gate/up GEMV over one token's k pairs (its
// output rows are the activations; D and I carried over, and the known group as the known pair: with one
// token, group j holds pair j).
inline MoeDownCombineParams moe_down_combine_params(const GemvParams& gate_up, const int32_t* pair_pos,
                                                    const int32_t* ids, const float* weights, int k,
                                                    const void* w_down, void* residual) {
  MoeDownCombineParams d;
  d.act = gate_up.y;
  d.pair_pos = pair_pos;
  d.ids = ids;
  d.weights = weights;
  d.w = w_down;
  d.residual = residual;
  d.D = gate_up.K;
  d.I = gate_up.N;
  d.k = k;
  d.known_pair = gate_up.known_group;
  d.known_expert = gate_up.known_weight;
  return d;
}

// Pairs of weight rows per warp so that the grid has a few blocks per SM (pure heuristic, host).
int choose_gemv_row_pairs(int out_cols, int num_groups, int num_sms, bool silu_mul);

}  // namespace ds::gpu
