// Grouped expert GEMM on tensor cores (bf16 in, fp32 accumulate, bf16 out) for the MoE at prefill
// and large decode batches: for every active expert slot (moe_route.h's permutation), its rows of x
// times that expert's weights, tiled as 128 weight rows x BN token rows x BK (mma.sync m16n8k16,
// 3-stage cp.async pipeline). Token tiles are found on the device from the slot ranges, so the launch shape
// depends only on size bounds (graph-capturable, no host synchronisation).
//   SiluMul: weights [groups, 2N, K] = [gate; up]: y[r, n] = silu(x_r . gate_n) * (x_r . up_n)
//   Store:   weights [groups, N, K]:               y[r, n] = x_r . w_n
// CPU twin: src/kernels/moe (run_moe_experts_cpu) / src/kernels/gemm.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace ds::gpu {

struct MoeGemmParams {
  const void* x = nullptr;             // [*, ldx] bf16
  int64_t ldx = 0;
  const int32_t* x_rows = nullptr;     // [pairs] optional gather: row r reads x row x_rows[r]
  const void* w = nullptr;             // [groups, rows_w, K] bf16
  int64_t w_group_stride = 0;          // elements
  void* y = nullptr;                   // [pairs, ldy] bf16 (row r of the permuted order)
  int64_t ldy = 0;
  int N = 0, K = 0;                    // output columns; K a multiple of the k tile
  bool silu_mul = false;
  const int32_t* slot_expert = nullptr;  // [slots] weight group of each active slot
  const int32_t* slot_start = nullptr;   // [slots + 1] row ranges
  const int32_t* num_active = nullptr;   // device scalar
  int max_slots = 0;                     // bound on *num_active
  int max_rows = 0;                      // bound on the total rows (sizes the grid)
  int tile_tokens = 64;                  // 16 or 64 rows of x per tile
  int k_tile = 0;                        // 32 or 64 (0: 64); K a multiple of it
};
void run_moe_gemm(const MoeGemmParams& p, cudaStream_t s);

// The experts' down projection that follows a SiLU-mul gate/up launch: reads its output rows (no gather),
// weights [groups, K_gate_up, N_gate_up], writes [rows, ldo] to `out`; slots and tiles carried over.
inline MoeGemmParams moe_down_gemm_params(const MoeGemmParams& gate_up, const void* w_down, void* out,
                                          int64_t ldo) {
  MoeGemmParams d = gate_up;
  d.x = gate_up.y;
  d.ldx = gate_up.ldy;
  d.x_rows = nullptr;
  d.w = w_down;
  d.w_group_stride = int64_t(gate_up.K) * gate_up.N;
  d.y = out;
  d.ldy = ldo;
  d.N = gate_up.K;
  d.K = gate_up.N;
  d.silu_mul = false;
  return d;
}

}  // namespace ds::gpu
