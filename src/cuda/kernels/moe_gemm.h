// Grouped expert GEMM on tensor cores (bf16 in, or FP8 e4m3 weights with scales; fp32 accumulate, bf16 out) for the MoE at prefill
// and large decode batches: for every active expert (moe_route.h's permutation), its rows of x
// times that expert's weights, tiled as 128 weight rows x BN token rows x BK (mma.sync m16n8k16,
// 3-stage cp.async pipeline). Token tiles are found on the device from the active experts' row ranges,
// so the launch shape depends only on size bounds (graph-capturable, no host synchronisation).
//   SiluMul: weights [experts, 2N, K] = [gate; up]: y[r, n] = silu(x_r . gate_n) * (x_r . up_n)
//   Store:   weights [experts, N, K]:              y[r, n] = x_r . w_n
// With tile_tokens 64 on sm_90 and DeviceContext::switches.wgmma (DELTASERVE_CUDA_WGMMA=1), the launch runs
// the warp-specialised wgmma kernel instead (moe_gemm_wgmma.h: 128-token tiles; same parameters, same output).
// CPU twin: src/kernels/moe (run_moe_experts_cpu) / src/kernels/gemm.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/device_context.h"

namespace ds::gpu {

// LayerStep::linear's FP8 projections beyond their GEMV and up to this many rows run this GEMM as one dense
// matrix (weight bytes read once per token tile); beyond, dequantize + cuBLASLt (5 bytes moved per weight,
// but bf16 tensor cores at full rate: the break-even was ~200 rows for the mma.sync kernels).
constexpr int kFp8TileMaxRows = 160;

struct MoeGemmParams {
  const void* x = nullptr;             // [*, ldx] bf16
  int64_t ldx = 0;
  const int32_t* x_rows = nullptr;     // [pairs] optional gather: row r reads x row x_rows[r]
  const void* w = nullptr;             // [experts, rows_w, K] bf16
  int64_t w_matrix_stride = 0;         // elements between weight matrices (experts)
  void* y = nullptr;                   // [pairs, ldy] bf16 (row r of the permuted order)
  int64_t ldy = 0;
  int N = 0, K = 0;                    // output columns; K a multiple of the k tile
  bool silu_mul = false;
  const int32_t* active_expert = nullptr;  // [max_active] weight matrix of each active expert (moe_route.h)
  const int32_t* active_start = nullptr;   // [max_active + 1] its row ranges
  const int32_t* num_active = nullptr;     // device scalar
  int max_active = 0;                      // bound on *num_active
  int max_rows = 0;                      // bound on the total rows (sizes the grid)
  int tile_tokens = 64;                  // 16 or 64 rows of x per tile
  int k_tile = 0;                        // 32 or 64 (0: 64); K a multiple of it
  // FP8 weights (w_scale set): w holds e4m3fn bytes, scaled as GemvParams' (scale blocks at least 16
  // columns wide); each weight tile is converted to bf16 (times its scale) as it is staged in shared memory.
  const float* w_scale = nullptr;
  int64_t scale_matrix_stride = 0, scale_ld = 1;
  int scale_row_shift = 0, scale_k_shift = 31;
  // FP8 only: true stages the raw weight bytes with cp.async, kStagesF k steps ahead (the default);
  // false converts them through registers one step ahead (session 5's kernel, kept for A/B benchmarks).
  bool fp8_staged = true;
  // Dense use (no routing; LayerStep::linear's FP8 projections at 9..kFp8TileMaxRows rows): dense_rows > 0
  // is one weight matrix `w` times x rows 0..dense_rows-1 (active_* unread; max_rows >= dense_rows sizes
  // the grid, max_active may be 0). accumulate: y += the product (the plain product only).
  int dense_rows = 0;
  bool accumulate = false;
  // INT4 experts (read by the FP8 wgmma kernel only, below): w holds nibbles as GemvParams::w_int4 says
  // (w_matrix_stride counts weights, two a byte; zero points w_zero in the scales' layout, null: 8).
  bool w_int4 = false;
  const float* w_zero = nullptr;
  // FP8 (or INT4) weights on Hopper, tile_tokens 16: scratch of x_split_bytes(x_split_rows, K) bytes
  // (moe_gemm_fp8_wgmma.h) where run_moe_gemm first splits x rows 0..x_split_rows-1 (every row the launch
  // reads, gathered or not) into e4m3 hi + lo parts for the FP8 tensor cores (DeviceContext::switches
  // .fp8_xsplit); null: the mma.sync kernels, which convert the weights to bf16.
  void* x_split = nullptr;
  // x_split already holds x's split (x_split_rows rows: LayerInput::split, written by the layer's RMSNorm), so no
  // split launch runs first.
  bool x_split_ready = false;
  // 64-token tiles of that kernel (prefill-sized launches): multiply x's hi part only, i.e. x rounded to e4m3 with
  // its split's power-of-two scale per row and 128 columns (DeepSeek-V3's per-token-group FP8 activations; half
  // the MMAs and x copies; DeviceContext::switches.fp8_prefill_hi). FP8 weights only; ignored elsewhere
  // (INT4 experts, W4A16, and 16-token tiles keep hi and lo).
  bool x_hi_only = false;
  // Split-K of that kernel's dense launches (DeviceContext::switches.fp8_split_k): fp32 partials
  // (splitk_capacity floats) and per-tile arrival counters (splitk_items ints, zero at start-up; the last
  // CTA of a tile resets its counter). Null: no split.
  float* splitk_partials = nullptr;
  int64_t splitk_capacity = 0;
  int* splitk_counters = nullptr;
  int splitk_items = 0;
  int x_split_rows = 0;
};
void run_moe_gemm(const MoeGemmParams& p, const DeviceContext& ctx);
// Sets the kernels' shared-memory limits on ctx's device (configure_kernels calls it once per context).
void configure_moe_gemm(const DeviceContext& ctx);

// The experts' down projection that follows a SiLU-mul gate/up launch: reads its output rows (no gather),
// weights [experts, K_gate_up, N_gate_up], writes [rows, ldo] to `out`; active experts and tiles carried over.
inline MoeGemmParams moe_down_gemm_params(const MoeGemmParams& gate_up, const void* w_down, void* out,
                                          int64_t ldo) {
  MoeGemmParams d = gate_up;
  d.x = gate_up.y;
  d.ldx = gate_up.ldy;
  d.x_rows = nullptr;
  d.w = w_down;
  d.w_matrix_stride = int64_t(gate_up.K) * gate_up.N;
  d.y = out;
  d.ldy = ldo;
  d.N = gate_up.K;
  d.K = gate_up.N;
  d.silu_mul = false;
  d.w_scale = nullptr;
  d.accumulate = false;
  d.x_split_rows = gate_up.max_rows;  // the pairs: the gate/up output rows, read in order
  d.x_split_ready = false;            // (its own split, of the gate/up output)
  return d;
}

}  // namespace ds::gpu
