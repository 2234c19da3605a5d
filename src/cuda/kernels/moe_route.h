// MoE routing on the GPU (spec 6.2) and the token permutation that groups (token, expert) pairs by
// expert for the grouped expert GEMMs. CPU twin of the routing: src/kernels/moe (run_moe_route_cpu).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"
#include "cuda/device_context.h"
#include "kernels/moe/op.h"

namespace ds::gpu {

// Per token: s = sigmoid(logits); selection on s + bias with grouped top-k (group score = sum of the
// group's two best; experts of groups outside the best topk_groups are not eligible), best first;
// weights = s (or s + bias when biased_weights) of the chosen experts, renormalised, times scale; with
// shared_expert_id >= 0, column top_k of each row holds that expert with weight 1. The params struct is
// the CPU twin's (kernels/moe/op.h): both twins take the same MoeRouteParams (bias required here).
using kernels::MoeRouteParams;
using kernels::moe_route_ldk;
void run_moe_route(const MoeRouteParams& p, const DeviceContext& ctx);

// Counting sort of the pairs by expert. Rows of the permuted order are grouped by expert; the active
// experts (count > 0) are listed in increasing id: active expert i is row group i of the grouped
// kernels (GemvParams::group_weight / group_start, MoeGemmParams::active_expert / active_start).
struct MoeAlignParams {
  const int32_t* ids = nullptr;      // [tokens, k] expert of each pair, each in [0, num_experts), or -1: another
                                     // rank's expert (expert parallelism), given no row (pair_pos -1)
  int tokens = 0, k = 0, num_experts = 0;
  int32_t* pair_pos = nullptr;       // [tokens, k] out: permuted row of each pair
  int32_t* sorted_token = nullptr;   // [tokens * k] out: token of each permuted row
  int32_t* active_expert = nullptr;  // [num_experts] out: expert of active entry i (i < *num_active)
  int32_t* active_start = nullptr;   // [num_experts + 1] out: its rows are [active_start[i], active_start[i+1])
  int32_t* num_active = nullptr;     // [1] out
  // Scratch of the multi-CTA sort (switches.moe_align_multi, from kMoeAlignMultiMinPairs pairs): CTA b's
  // count, then row offset, of each expert at [b * num_experts + e]; capacity in ints. Null: one CTA.
  int32_t* block_offsets = nullptr;
  int64_t block_offsets_capacity = 0;
};
// The multi-CTA sort: kMoeAlignChunk pairs a CTA, from kMoeAlignMultiMinPairs pairs on (prefill-sized steps:
// one CTA took 99 us of a 4 x 2,048-token step's MoE layer, ncu, docs/PERF.md session 18).
constexpr int kMoeAlignChunk = 1024, kMoeAlignMultiMinPairs = 4096;
void run_moe_align(const MoeAlignParams& p, const DeviceContext& ctx);

// Expert parallelism: this rank holds experts [begin, begin + count) as its local experts 0..count-1. The
// first top_k columns of ids [tokens, ldk] (global ids from run_moe_route) become local ids, or -1 for
// another rank's expert (run_moe_align and the combine then skip the pair; its owner adds it).
void run_moe_keep_local(int32_t* ids, int tokens, int ldk, int top_k, int begin, int count, const DeviceContext& ctx);

// Both in one launch for small batches (<= 64 tokens); otherwise the two kernels above. One token:
// one warp, and its pairs become one-row active entries in pair order (not sorted by expert).
void run_moe_route_align(const MoeRouteParams& r, const MoeAlignParams& a, const DeviceContext& ctx);
// run_moe_route_align lays the pairs out one-token style (active entry j = pair j, in pair order).
bool moe_one_token_layout(const MoeRouteParams& r, const MoeAlignParams& a);

}  // namespace ds::gpu
