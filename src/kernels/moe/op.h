// Mixture-of-experts routing and expert evaluation on fp32 host memory (CPU twins; spec §6).
//
// Routing per token (DeepSeek-V3 "noaux_tc" semantics, QK-M KimiMoEGate):
//   s = sigmoid(logits); s' = s + correction_bias (selection only);
//   grouped top-k: experts split into num_groups equal groups, a group scores the sum of its two best s',
//   the topk_group best groups stay eligible (the others are excluded outright), then the top_k eligible
//   experts by s' are chosen (ties: lower expert id first), best first;
//   weights = s of the chosen experts (s' with biased_weights: the released remote code's in-place
//   quirk), renormalised w / (Σw + 1e-20) when `renormalize`, times `scaling`.
// Experts: y += Σ_i w_i · W2_e (silu(W1_e x) ⊙ W3_e x), tokens grouped by expert so each expert is a GEMM;
// per token the contributions are added in increasing expert id.
#pragma once
#include <cstdint>

namespace ds::kernels {

// One struct for both twins: run_moe_route_cpu here and the GPU's run_moe_route / run_moe_route_align
// (src/cuda/kernels/moe_route.h) take the same MoeRouteParams.
struct MoeRouteParams {
  const float* logits = nullptr;     // [tokens, num_experts] router logits (x · W_routerᵀ, fp32)
  const float* bias = nullptr;       // [num_experts] e_score_correction_bias (null: zero; the GPU needs it)
  int32_t* topk_ids = nullptr;       // [tokens, ldk] chosen experts, best first
  float* topk_weights = nullptr;     // [tokens, ldk]
  int tokens = 0, num_experts = 0, top_k = 0;
  int num_groups = 1, topk_groups = 1;  // num_expert_group, topk_group
  bool renormalize = true;
  float scale = 1.0f;                // routed_scaling_factor
  bool biased_weights = false;
  int ldk = 0;                       // row stride of topk_ids / topk_weights (0: top_k, + 1 with a shared expert)
  int shared_expert_id = -1;         // >= 0: column top_k of every row gets this expert with weight 1
  // [tokens, top_k] experts to use instead of selecting them (weights still come from these logits):
  // numerical tests pin routing so that a near-tied choice cannot flip between two implementations.
  const int32_t* forced_ids = nullptr;
};
// The row stride p describes (ldk, or its default).
inline int moe_route_ldk(const MoeRouteParams& p) {
  return p.ldk > 0 ? p.ldk : p.top_k + (p.shared_expert_id >= 0 ? 1 : 0);
}
void run_moe_route_cpu(const MoeRouteParams& p);

struct MoeExpertsParams {
  const float* x = nullptr;          // [T, D]
  const int32_t* ids = nullptr;      // [T, top_k] expert ids in [0, E)
  const float* weights = nullptr;    // [T, top_k]
  const float* const* w1 = nullptr;  // [E] pointers to [I, D] (gate); a null one: the expert is skipped
                                     // (expert parallelism: another rank holds it and adds its share)
  const float* const* w3 = nullptr;  // [E] pointers to [I, D] (up)
  const float* const* w2 = nullptr;  // [E] pointers to [D, I] (down)
  float* y = nullptr;                // [T, D]; the weighted expert outputs are added to it
  int64_t T = 0, D = 0, I = 0, E = 0, top_k = 0;
};
void run_moe_experts_cpu(const MoeExpertsParams& p);

}  // namespace ds::kernels
