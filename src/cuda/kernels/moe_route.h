// MoE routing on the GPU (spec 6.2) and the token permutation that groups (token, expert) pairs by
// expert for the grouped expert GEMMs. CPU twin of the routing: src/kernels/moe (run_moe_route_cpu).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"

namespace ds::gpu {

// Per token: s = sigmoid(logits); selection on s + bias with grouped top-k (group score = sum of the
// group's two best; experts of groups outside the best topk_groups are not eligible), best first;
// weights = s (or s + bias when biased_weights) of the chosen experts, renormalised, times scale.
struct MoeRouteParams {
  const float* logits = nullptr;     // [tokens, num_experts] fp32 router logits
  const float* bias = nullptr;       // [num_experts] e_score_correction_bias (fp32)
  int tokens = 0, num_experts = 0, top_k = 0;
  int num_groups = 1, topk_groups = 1;
  bool renormalize = true, biased_weights = false;
  float scale = 1.f;                 // routed_scaling_factor
  int32_t* topk_ids = nullptr;       // [tokens, ldk]
  float* topk_weights = nullptr;     // [tokens, ldk]
  int ldk = 0;                       // >= top_k; column top_k gets shared_expert_id with weight 1 when >= 0
  int shared_expert_id = -1;
  // [tokens, top_k] experts to use instead of selecting them (weights still from these logits):
  // numerical tests pin routing so that near-tied choices cannot flip between implementations.
  const int32_t* forced_ids = nullptr;
};
void run_moe_route(const MoeRouteParams& p, cudaStream_t s);

// Counting sort of the pairs by expert. Rows of the permuted order are grouped by expert; the
// active experts (count > 0) are listed in increasing id as "slots" for the grouped kernels.
struct MoeAlignParams {
  const int32_t* ids = nullptr;      // [tokens, k] expert of each pair, each in [0, num_experts)
  int tokens = 0, k = 0, num_experts = 0;
  int32_t* pair_pos = nullptr;       // [tokens, k] out: permuted row of each pair
  int32_t* sorted_token = nullptr;   // [tokens * k] out: token of each permuted row
  int32_t* slot_expert = nullptr;    // [num_experts] out: expert of slot i (i < *num_active)
  int32_t* slot_start = nullptr;     // [num_experts + 1] out: rows of slot i are [slot_start[i], slot_start[i+1])
  int32_t* num_active = nullptr;     // [1] out
};
void run_moe_align(const MoeAlignParams& p, cudaStream_t s);

// Both in one launch for small batches (<= 64 tokens); otherwise the two kernels above. One token:
// one warp, and its pairs become one-row slots in pair order (not sorted by expert).
void run_moe_route_align(const MoeRouteParams& r, const MoeAlignParams& a, cudaStream_t s);
// run_moe_route_align lays the pairs out one-token style (slot j = pair j, in pair order).
bool moe_one_token_layout(const MoeRouteParams& r, const MoeAlignParams& a);

}  // namespace ds::gpu
