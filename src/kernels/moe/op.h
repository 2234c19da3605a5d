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

struct MoeRouteParams {
  const float* logits = nullptr;  // [T, E] router logits (x · W_routerᵀ, fp32)
  const float* bias = nullptr;    // [E] e_score_correction_bias; may be null (zero)
  int32_t* ids = nullptr;         // [T, top_k] chosen experts, best first
  float* weights = nullptr;       // [T, top_k]
  int64_t T = 0, E = 0, top_k = 0;
  int64_t num_groups = 1, topk_group = 1;
  bool renormalize = true;
  float scaling = 1.0f;
  bool biased_weights = false;
  // [T, top_k] experts to use instead of selecting them (weights still come from these logits):
  // numerical tests pin routing so that a near-tied choice cannot flip between two implementations.
  const int32_t* forced_ids = nullptr;
};
void run_moe_route_cpu(const MoeRouteParams& p);

struct MoeExpertsParams {
  const float* x = nullptr;          // [T, D]
  const int32_t* ids = nullptr;      // [T, top_k] expert ids in [0, E)
  const float* weights = nullptr;    // [T, top_k]
  const float* const* w1 = nullptr;  // [E] pointers to [I, D] (gate)
  const float* const* w3 = nullptr;  // [E] pointers to [I, D] (up)
  const float* const* w2 = nullptr;  // [E] pointers to [D, I] (down)
  float* y = nullptr;                // [T, D]; the weighted expert outputs are added to it
  int64_t T = 0, D = 0, I = 0, E = 0, top_k = 0;
};
void run_moe_experts_cpu(const MoeExpertsParams& p);

}  // namespace ds::kernels
