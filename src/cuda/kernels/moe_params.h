// The launches of one MoE layer, as parameters built from its routing: route + align (moe_route.h),
// the experts' gate/up projection as a grouped GEMV (gemv.h, decode-sized batches) or grouped GEMM
// (moe_gemm.h, bf16 at larger batches), and the weighted combine into the residual (elementwise.h). The
// model, the op tests and the benchmarks build them here, so the wiring between the launches (which
// buffer feeds which field) exists once.
#pragma once
#include <algorithm>
#include <cstdint>

#include "cuda/kernels/elementwise.h"
#include "cuda/kernels/gemv.h"
#include "cuda/kernels/moe_gemm.h"
#include "cuda/kernels/moe_route.h"

namespace ds::gpu {

// Where the align step writes (device; sized for the routing's tokens * ldk pairs and its weight
// matrices: num_experts, + 1 with a folded shared expert).
struct MoeAlignBuffers {
  int32_t* pair_pos = nullptr;       // [tokens, ldk]
  int32_t* sorted_token = nullptr;   // [tokens * ldk]
  int32_t* active_expert = nullptr;  // [matrices]
  int32_t* active_start = nullptr;   // [matrices + 1]
  int32_t* num_active = nullptr;     // [1]
  int32_t* block_offsets = nullptr;  // the multi-CTA sort's scratch (MoeAlignParams::block_offsets), or null
  int64_t block_offsets_capacity = 0;
};

// Weight matrices the experts' launches index: the routed experts, and the shared expert folded in as
// expert num_experts when the routing appends it.
inline int moe_num_matrices(const MoeRouteParams& r) { return r.num_experts + (r.shared_expert_id >= 0 ? 1 : 0); }

// The counting sort of the routing's pairs (ids and ldk from r).
inline MoeAlignParams moe_align_params(const MoeRouteParams& r, const MoeAlignBuffers& b) {
  return MoeAlignParams{.ids = r.topk_ids,
                        .tokens = r.tokens,
                        .k = moe_route_ldk(r),
                        .num_experts = moe_num_matrices(r),
                        .pair_pos = b.pair_pos,
                        .sorted_token = b.sorted_token,
                        .active_expert = b.active_expert,
                        .active_start = b.active_start,
                        .num_active = b.num_active,
                        .block_offsets = b.block_offsets,
                        .block_offsets_capacity = b.block_offsets_capacity};
}

// The experts' gate/up projection as a grouped GEMV (SiluMul): row group i is active expert i, its rows
// the tokens routed to it (gathered from x by sorted_token), weights [matrices, 2I, D] = [gate; up];
// writes [pairs, I] to act. With one token and a folded shared expert (run_moe_route_align's one-token
// layout), the shared expert's group is known on the host, so its weights stream before the routing is read.
inline GemvParams moe_gate_up_gemv_params(const MoeRouteParams& r, const MoeAlignParams& a, const void* x,
                                          int64_t ldx, const void* w_gate_up, int D, int I, void* act) {
  GemvParams g;
  g.x = x;
  g.ldx = ldx;
  g.x_rows = a.sorted_token;
  g.w = w_gate_up;
  g.w_matrix_stride = int64_t(2) * I * D;
  g.y = act;
  g.ldy = I;
  g.N = I;
  g.K = D;
  g.num_groups = std::min(a.num_experts, a.tokens * a.k);
  g.group_weight = a.active_expert;
  g.group_start = a.active_start;
  g.num_active = a.num_active;
  g.max_rows = a.tokens;  // an expert sees each token at most once
  g.x_row_shared = a.tokens == 1;
  g.epi = GemvEpilogue::SiluMul;
  if (r.shared_expert_id >= 0 && moe_one_token_layout(r, a)) {  // the shared expert is group top_k
    g.known_group = r.top_k;
    g.known_weight = r.shared_expert_id;
  }
  return g;
}

// The same projection on tensor cores (bf16): token tiles of tile_tokens rows (16 or 64).
inline MoeGemmParams moe_gate_up_gemm_params(const MoeAlignParams& a, const void* x, int64_t ldx,
                                             const void* w_gate_up, int D, int I, void* act, int tile_tokens) {
  MoeGemmParams g;
  g.x = x;
  g.ldx = ldx;
  g.x_rows = a.sorted_token;
  g.w = w_gate_up;
  g.w_matrix_stride = int64_t(2) * I * D;
  g.y = act;
  g.ldy = I;
  g.N = I;
  g.K = D;
  g.silu_mul = true;
  g.active_expert = a.active_expert;
  g.active_start = a.active_start;
  g.num_active = a.num_active;
  g.max_active = std::min(a.num_experts, a.tokens * a.k);
  g.max_rows = a.tokens * a.k;
  g.tile_tokens = tile_tokens;
  return g;
}

// residual += the routing's weighted sum of the expert outputs (rows in the aligned order).
inline MoeCombineParams moe_combine_params(const MoeRouteParams& r, const MoeAlignParams& a, const void* expert_out,
                                           void* residual, int D) {
  return MoeCombineParams{.expert_out = expert_out,
                          .pair_pos = a.pair_pos,
                          .weights = r.topk_weights,
                          .residual = residual,
                          .tokens = a.tokens,
                          .k = a.k,
                          .dim = D};
}

}  // namespace ds::gpu
