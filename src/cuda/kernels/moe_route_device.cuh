// Device code of the MoE routing shared by moe_route.cu and the fused router kernel (gemv_block.cu):
// the one-warp register top-k and the one-token slot layout.
#pragma once
#include "cuda/kernels/common.cuh"
#include "cuda/kernels/moe_route.h"

namespace ds::gpu {

// route_token_regs applies: up to 256 experts in one group, unforced, top_k <= 32.
__device__ __forceinline__ bool route_regs_applies(const MoeRouteParams& p) {
  return p.num_experts <= 256 && p.num_groups == 1 && !p.forced_ids && p.top_k <= 32;
}

// route_token for up to 256 experts in one group, unforced: each lane keeps its 8 scores in registers
// and the top-k is k rounds of (lane-local best, warp argmax), no shared memory. The logits are read
// through L2 (the fused router kernel reads logits that its other blocks wrote).
__device__ inline void route_token_regs(const MoeRouteParams& p, int t, int lane, int* ids_copy) {
  const int E = p.num_experts;
  const float* lg = p.logits + int64_t(t) * E;
  float sc[8], sel[8];  // expert e = j * 32 + lane
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const int e = j * 32 + lane;
    const float l = e < E ? __ldcg(lg + e) : 0.f, b = e < E ? p.bias[e] : 0.f;
    sc[j] = 1.f / (1.f + expf(-l));
    sel[j] = e < E ? sc[j] + b : -INFINITY;
  }
  int32_t* ids = p.topk_ids + int64_t(t) * p.ldk;
  float* ws = p.topk_weights + int64_t(t) * p.ldk;
  float sum = 0.f, mine = 0.f;  // lane i < top_k keeps the weight of rank i
  for (int i = 0; i < p.top_k; ++i) {
    float best = -INFINITY;
    int bi = 0x7fffffff;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int e = j * 32 + lane;
      if (sel[j] > best || (sel[j] == best && e < bi)) { best = sel[j]; bi = e; }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float ob = __shfl_xor_sync(0xffffffffu, best, o);
      const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (ob > best || (ob == best && oi < bi)) { best = ob; bi = oi; }
    }
    // the owner lane reads the chosen expert's score and retires it
    float w = 0.f;
#pragma unroll
    for (int j = 0; j < 8; ++j)
      if (j * 32 + lane == bi) {
        w = p.biased_weights ? sel[j] : sc[j];
        sel[j] = -INFINITY;
      }
    w = __shfl_sync(0xffffffffu, w, bi & 31);
    sum += w;
    if (lane == i) mine = w;
    if (lane == 0) {
      ids[i] = bi;
      if (ids_copy) ids_copy[t * p.ldk + i] = bi;
    }
  }
  const float f = p.renormalize ? p.scale / (sum + 1e-20f) : p.scale;
  if (lane < p.top_k) ws[lane] = mine * f;
  if (lane == 0 && p.shared_expert_id >= 0) {
    ids[p.top_k] = p.shared_expert_id;
    ws[p.top_k] = 1.f;
    if (ids_copy) ids_copy[t * p.ldk + p.top_k] = p.shared_expert_id;
  }
}

// One token's k pairs laid out as k one-row slots in pair order (slot j = pair j, expert ids_s[j]):
// the grouped kernels need no sort by expert. Lanes of one warp.
__device__ inline void route_one_layout(const MoeAlignParams& a, const int* ids_s, int lane) {
  if (lane < a.k) {
    a.pair_pos[lane] = lane;
    a.sorted_token[lane] = 0;
    a.slot_expert[lane] = ids_s[lane];
    a.slot_start[lane] = lane;
  }
  if (lane == 0) {
    a.slot_start[a.k] = a.k;
    *a.num_active = a.k;
  }
}

}  // namespace ds::gpu
