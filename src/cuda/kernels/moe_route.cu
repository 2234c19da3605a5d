#include <algorithm>

#include "cuda/kernels/common.cuh"
#include "cuda/kernels/moe_route.h"

namespace ds::gpu {
namespace {

constexpr int kRouteWarps = 4;

// Warp argmax over v[0..n) (ties: lowest index). Returns the index (all lanes).
__device__ int warp_argmax(const float* v, int n, int lane) {
  float best = -INFINITY;
  int bi = 0x7fffffff;
  for (int e = lane; e < n; e += 32) {
    float x = v[e];
    if (x > best || (x == best && e < bi)) { best = x; bi = e; }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    float ob = __shfl_xor_sync(0xffffffffu, best, o);
    int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (ob > best || (ob == best && oi < bi)) { best = ob; bi = oi; }
  }
  return bi;
}

// route_token for up to 256 experts in one group, unforced: each lane keeps its 8 scores in registers
// and the top-k is k rounds of (lane-local best, warp argmax), no shared memory.
__device__ void route_token_regs(const MoeRouteParams& p, int t, int lane, int* ids_copy) {
  const int E = p.num_experts;
  const float* lg = p.logits + int64_t(t) * E;
  float sc[8], sel[8];  // expert e = j * 32 + lane
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const int e = j * 32 + lane;
    const float l = e < E ? lg[e] : 0.f, b = e < E ? p.bias[e] : 0.f;
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

// Routes token t with one warp; `s` holds 3 * num_experts floats of scratch for the warp.
__host__ __device__ bool route_in_registers(const MoeRouteParams& p);

__device__ void route_token(const MoeRouteParams& p, int t, float* s, int lane, int* ids_copy = nullptr) {
  if (route_in_registers(p)) {
    route_token_regs(p, t, lane, ids_copy);
    return;
  }
  const int E = p.num_experts;
  float* sb = s + E;   // biased (selection) scores
  float* sel = sb + E; // working copy for the selection
  const float* lg = p.logits + int64_t(t) * E;
  for (int e0 = 0; e0 < E; e0 += 256) {  // 8 independent loads per lane in flight, not a chain
    float l[8], b[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      int e = e0 + j * 32 + lane;
      l[j] = e < E ? lg[e] : 0.f;
      b[j] = e < E ? p.bias[e] : 0.f;
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      int e = e0 + j * 32 + lane;
      if (e < E) {
        float v = 1.f / (1.f + expf(-l[j]));
        s[e] = v;
        sb[e] = v + b[j];
        sel[e] = v + b[j];
      }
    }
  }
  __syncwarp();
  if (p.num_groups > 1) {
    int per = E / p.num_groups;
    // lane g scores group g (sum of its two best); groups <= 32
    float gs = -INFINITY;
    if (lane < p.num_groups) {
      float b1 = -INFINITY, b2 = -INFINITY;
      for (int e = lane * per; e < (lane + 1) * per; ++e) {
        float x = sb[e];
        if (x > b1) { b2 = b1; b1 = x; } else if (x > b2) { b2 = x; }
      }
      gs = per >= 2 ? b1 + b2 : b1;
    }
    unsigned keep = 0;
    for (int i = 0; i < p.topk_groups; ++i) {
      float best = gs;
      int bi = lane < p.num_groups ? lane : 0x7fffffff;
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) {
        float ob = __shfl_xor_sync(0xffffffffu, best, o);
        int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (ob > best || (ob == best && oi < bi)) { best = ob; bi = oi; }
      }
      keep |= 1u << bi;
      if (lane == bi) gs = -INFINITY;
    }
    for (int e = lane; e < E; e += 32)
      if (!((keep >> (e / per)) & 1u)) sel[e] = -INFINITY;  // excluded groups are not eligible
    __syncwarp();
  }
  int32_t* ids = p.topk_ids + int64_t(t) * p.ldk;
  float* ws = p.topk_weights + int64_t(t) * p.ldk;
  float sum = 0.f;
  for (int i = 0; i < p.top_k; ++i) {
    int e = p.forced_ids ? p.forced_ids[int64_t(t) * p.top_k + i] : warp_argmax(sel, E, lane);
    float w = p.biased_weights ? sb[e] : s[e];
    sum += w;
    if (lane == 0) {
      ids[i] = e;
      ws[i] = w;
      if (ids_copy) ids_copy[t * p.ldk + i] = e;
    }
    __syncwarp();
    if (lane == 0) sel[e] = -INFINITY;
    __syncwarp();
  }
  if (lane == 0) {
    float f = p.renormalize ? p.scale / (sum + 1e-20f) : p.scale;
    for (int i = 0; i < p.top_k; ++i) ws[i] *= f;
    if (p.shared_expert_id >= 0) {
      ids[p.top_k] = p.shared_expert_id;
      ws[p.top_k] = 1.f;
      if (ids_copy) ids_copy[t * p.ldk + p.top_k] = p.shared_expert_id;
    }
  }
}

__global__ void moe_route_kernel(MoeRouteParams p) {
  pdl_trigger();
  pdl_wait();
  extern __shared__ float smem[];
  int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  int t = blockIdx.x * kRouteWarps + warp;
  if (t >= p.tokens) return;
  route_token(p, t, smem + warp * 3 * p.num_experts, lane);
}

// The experts' rows in expert order, by the whole block: count(e) rows of expert e (asked once, by one thread, for
// each e), start(e, row) told its first row; the active experts (count > 0) listed with their row ranges.
template <typename Count, typename Start>
__device__ __forceinline__ void lay_out_experts(const MoeAlignParams& p, int* scan_tmp, Count count, Start start) {
  int run = 0, na = 0;  // carried over chunks of blockDim.x experts
  for (int e0 = 0; e0 < p.num_experts; e0 += blockDim.x) {
    int e = e0 + threadIdx.x;
    int c = e < p.num_experts ? count(e) : 0;
    int tot_c = 0, tot_a = 0;
    int ex_c = block_exclusive_scan(c, scan_tmp, &tot_c);
    int ex_a = block_exclusive_scan(c > 0 ? 1 : 0, scan_tmp, &tot_a);
    if (e < p.num_experts) {
      start(e, run + ex_c);
      if (c > 0) {
        p.active_expert[na + ex_a] = e;
        p.active_start[na + ex_a] = run + ex_c;
      }
    }
    run += tot_c;
    na += tot_a;
  }
  if (threadIdx.x == 0) {
    p.active_start[na] = run;
    *p.num_active = na;
  }
}

// Counting sort of the pairs by expert in one block; experts spread over the threads.
// ids: the pairs' experts (p.ids, or a shared-memory copy); rank: shared scratch for the per-pair
// ranks (or null: kept in p.pair_pos).
__device__ void align_block(const MoeAlignParams& p, const int* ids, int* rank, int* counts, int* scan_tmp) {
  int* starts = counts + p.num_experts;
  const int pairs = p.tokens * p.k;
  int* rk = rank ? rank : p.pair_pos;
  for (int e = threadIdx.x; e < p.num_experts; e += blockDim.x) counts[e] = 0;
  __syncthreads();
  for (int i = threadIdx.x; i < pairs; i += blockDim.x) rk[i] = ids[i] < 0 ? -1 : atomicAdd(&counts[ids[i]], 1);
  __syncthreads();
  lay_out_experts(p, scan_tmp, [counts](int e) { return counts[e]; }, [starts](int e, int row) { starts[e] = row; });
  __syncthreads();
  for (int i = threadIdx.x; i < pairs; i += blockDim.x) {
    if (ids[i] < 0) {  // another rank's expert (expert parallelism): no row here
      p.pair_pos[i] = -1;
      continue;
    }
    int pos = starts[ids[i]] + rk[i];
    p.pair_pos[i] = pos;
    p.sorted_token[pos] = i / p.k;
  }
}

__global__ void moe_keep_local_kernel(int32_t* ids, int tokens, int ldk, int top_k, int begin, int count) {
  pdl_trigger();
  pdl_wait();
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= tokens * top_k) return;
  int32_t* id = ids + int64_t(i / top_k) * ldk + i % top_k;
  const int e = *id - begin;
  *id = e >= 0 && e < count ? e : -1;
}

// ---- the multi-CTA sort (MoeAlignParams::block_offsets): count, scan, place -------------------------------
// 1: CTA b counts its chunk's pairs per expert (the rank within the chunk into pair_pos, from shared-memory
// atomics) into block_offsets[b][e].
__global__ void moe_align_count_kernel(MoeAlignParams p, int chunk) {
  pdl_trigger();
  pdl_wait();
  extern __shared__ int cnt[];  // [num_experts]
  const int E = p.num_experts, pairs = p.tokens * p.k, i0 = int(blockIdx.x) * chunk, i1 = min(pairs, i0 + chunk);
  for (int e = threadIdx.x; e < E; e += blockDim.x) cnt[e] = 0;
  __syncthreads();
  for (int i = i0 + int(threadIdx.x); i < i1; i += blockDim.x) {
    const int e = p.ids[i];
    p.pair_pos[i] = e < 0 ? -1 : atomicAdd(&cnt[e], 1);
  }
  __syncthreads();
  for (int e = threadIdx.x; e < E; e += blockDim.x) p.block_offsets[int64_t(blockIdx.x) * E + e] = cnt[e];
}

// 2 (one CTA): per expert, the CTAs' counts become their first rows (the expert's start plus the counts of
// the CTAs before); the active experts and their row ranges as align_block writes them.
__global__ void moe_align_scan_kernel(MoeAlignParams p, int blocks) {
  pdl_trigger();
  pdl_wait();
  __shared__ int scan_tmp[32];
  const int E = p.num_experts;
  auto count = [&](int e) {  // expert e's counts of the CTAs become its offsets within the expert
    int c = 0;
    for (int b = 0; b < blocks; ++b) {
      int32_t* q = p.block_offsets + int64_t(b) * E + e;
      const int v = *q;
      *q = c;
      c += v;
    }
    return c;
  };
  auto start = [&](int e, int row) {
    for (int b = 0; b < blocks; ++b) p.block_offsets[int64_t(b) * E + e] += row;
  };
  lay_out_experts(p, scan_tmp, count, start);
}

// 3: each pair's row = its CTA's first row for the expert + its rank within the CTA.
__global__ void moe_align_place_kernel(MoeAlignParams p, int chunk) {
  pdl_trigger();
  pdl_wait();
  const int E = p.num_experts, pairs = p.tokens * p.k, i0 = int(blockIdx.x) * chunk, i1 = min(pairs, i0 + chunk);
  for (int i = i0 + int(threadIdx.x); i < i1; i += blockDim.x) {
    const int e = p.ids[i];
    if (e < 0) continue;  // (pair_pos is -1 already)
    const int pos = p.block_offsets[int64_t(blockIdx.x) * E + e] + p.pair_pos[i];
    p.pair_pos[i] = pos;
    p.sorted_token[pos] = i / p.k;
  }
}

__global__ void moe_align_kernel(MoeAlignParams p) {
  pdl_trigger();
  pdl_wait();
  extern __shared__ int counts[];  // [2 * num_experts]: counts, then starts
  __shared__ int scan_tmp[32];
  align_block(p, p.ids, nullptr, counts, scan_tmp);
}

// Whether route_token takes its register path (no shared-memory scratch).
__host__ __device__ bool route_in_registers(const MoeRouteParams& p) {
  return p.num_experts <= 256 && p.num_groups == 1 && !p.forced_ids && p.top_k <= 32;
}

// Small batches (decode): routing and the permutation in one launch. Register routing: up to 16 warps, one
// token each (a warp's top-k is a chain of shuffles: tokens in parallel, not in turn); otherwise 8 warps
// with 3 * num_experts floats of shared scratch each.
constexpr int kFusedWarps = 8, kFusedMaxWarps = 16;  // 16: the kernel's 84 registers x 1024 threads did not fit
constexpr int kFusedMaxPairs = 64 * 9;
__global__ void __launch_bounds__(kFusedMaxWarps * 32) moe_route_align_kernel(MoeRouteParams r, MoeAlignParams a) {
  pdl_trigger();
  pdl_wait();
  extern __shared__ float smem[];
  __shared__ int scan_tmp[32];
  __shared__ int ids_s[kFusedMaxPairs], rank_s[kFusedMaxPairs];  // the pairs stay on chip
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  const int scratch = route_in_registers(r) ? 0 : 3 * r.num_experts;  // floats per warp
  for (int t = warp; t < r.tokens; t += warps) route_token(r, t, smem + warp * scratch, lane, ids_s);
  __syncthreads();
  align_block(a, ids_s, rank_s, reinterpret_cast<int*>(smem + warps * scratch), scan_tmp);
}

// One token's k pairs (experts ids[j], lane j of one warp each) as k one-row active entries in pair order
// (entry j = pair j): the grouped kernels need no sort by expert.
__device__ __forceinline__ void lay_out_one_token(const MoeAlignParams& a, const int* ids, int lane) {
  if (lane < a.k) {
    a.pair_pos[lane] = lane;
    a.sorted_token[lane] = 0;
    a.active_expert[lane] = ids[lane];
    a.active_start[lane] = lane;
  }
  if (lane == 0) {
    a.active_start[a.k] = a.k;
    *a.num_active = a.k;
  }
}

// One token (decode at batch 1), one warp: route it, then lay its pairs out (lay_out_one_token).
__global__ void moe_route_one_kernel(MoeRouteParams r, MoeAlignParams a) {
  pdl_trigger();
  pdl_wait();
  extern __shared__ float smem[];
  __shared__ int ids_s[32];
  const int lane = threadIdx.x;
  route_token(r, 0, smem, lane, ids_s);
  __syncwarp();
  lay_out_one_token(a, ids_s, lane);
}

// The routing parameters both routing launchers check (r.ldk resolved): inputs and outputs set, the expert groups
// and the row stride.
void require_route(const MoeRouteParams& r) {
  DS_GPU_REQUIRE(r.logits && r.bias && r.topk_ids && r.topk_weights, "run_moe_route: null pointer");
  DS_GPU_REQUIRE(r.num_groups >= 1 && r.num_groups <= 32 && r.num_experts % r.num_groups == 0,
                 "run_moe_route: num_expert_group must divide num_experts and be <= 32");
  DS_GPU_REQUIRE(r.topk_groups >= 1 && r.topk_groups <= r.num_groups, "run_moe_route: bad topk_group");
  DS_GPU_REQUIRE(r.ldk >= r.top_k + (r.shared_expert_id >= 0 ? 1 : 0), "run_moe_route: ldk too small");
}
}  // namespace

void run_moe_route(const MoeRouteParams& p0, const DeviceContext& ctx) {
  if (p0.tokens == 0) return;
  MoeRouteParams p = p0;
  p.ldk = moe_route_ldk(p0);
  require_route(p);
  DS_GPU_REQUIRE(p.top_k >= 1 && p.top_k <= p.num_experts, "run_moe_route: bad top_k");
  size_t smem = size_t(kRouteWarps) * 3 * p.num_experts * sizeof(float);
  DS_GPU_REQUIRE(smem <= 48 * 1024, "run_moe_route: too many experts for one warp's shared memory");
  launch_pdl(moe_route_kernel, ceil_div(p.tokens, kRouteWarps), kRouteWarps * 32, smem, ctx, p);
  DS_CUDA_CHECK_LAUNCH();
}

void run_moe_align(const MoeAlignParams& p, const DeviceContext& ctx) {
  if (p.tokens == 0) return;
  const int pairs = p.tokens * p.k;
  if (ctx.switches.moe_align_multi && p.block_offsets && pairs >= kMoeAlignMultiMinPairs) {
    const int blocks = int(std::min<int64_t>(ceil_div(pairs, kMoeAlignChunk), p.block_offsets_capacity / p.num_experts));
    if (blocks >= 2 && size_t(p.num_experts) * sizeof(int) <= 48 * 1024) {
      const int chunk = int(ceil_div(pairs, blocks));
      launch_pdl(moe_align_count_kernel, blocks, 256, size_t(p.num_experts) * sizeof(int), ctx, p, chunk);
      launch_pdl(moe_align_scan_kernel, 1, 1024, 0, ctx, p, blocks);
      launch_pdl(moe_align_place_kernel, blocks, 256, 0, ctx, p, chunk);
      DS_CUDA_CHECK_LAUNCH();
      return;
    }
  }
  size_t smem = size_t(2 * p.num_experts) * sizeof(int);
  DS_GPU_REQUIRE(smem <= 40 * 1024, "run_moe_align: too many experts");
  launch_pdl(moe_align_kernel, 1, 1024, smem, ctx, p);
  DS_CUDA_CHECK_LAUNCH();
}

void run_moe_keep_local(int32_t* ids, int tokens, int ldk, int top_k, int begin, int count, const DeviceContext& ctx) {
  if (tokens == 0) return;
  DS_GPU_REQUIRE(ids && ldk >= top_k && top_k >= 1 && begin >= 0 && count >= 1, "run_moe_keep_local: bad arguments");
  launch_pdl(moe_keep_local_kernel, ceil_div(tokens * top_k, 256), 256, 0, ctx, ids, tokens, ldk, top_k, begin, count);
  DS_CUDA_CHECK_LAUNCH();
}

namespace {
// (DeviceContext::switches.route_warps: the register path's warp per token, the default since session 19; off:
// 8 warps)
int route_align_warps(const MoeRouteParams& r, bool wide) {
  return wide && route_in_registers(r) ? std::clamp(r.tokens, kFusedWarps, kFusedMaxWarps) : kFusedWarps;
}
size_t route_align_smem(const MoeRouteParams& r, const MoeAlignParams& a, bool wide) {
  const size_t scratch = route_in_registers(r) ? 0 : size_t(3) * r.num_experts;
  return size_t(route_align_warps(r, wide)) * scratch * sizeof(float) + size_t(2 * a.num_experts) * sizeof(int);
}
bool route_align_fused(const MoeRouteParams& r, const MoeAlignParams& a) {
  return r.tokens * a.k <= kFusedMaxPairs && moe_route_ldk(r) == a.k && route_align_smem(r, a, false) <= 40 * 1024;
}
}  // namespace

bool moe_one_token_layout(const MoeRouteParams& r, const MoeAlignParams& a) {
  return r.tokens == 1 && a.k <= 32 && route_align_fused(r, a);
}

void run_moe_route_align(const MoeRouteParams& r0, const MoeAlignParams& a, const DeviceContext& ctx) {
  if (r0.tokens == 0) return;
  MoeRouteParams r = r0;
  r.ldk = moe_route_ldk(r0);
  const bool wide = ctx.switches.route_warps;
  const size_t smem = route_align_smem(r, a, wide);
  if (!route_align_fused(r, a)) {
    run_moe_route(r, ctx);
    run_moe_align(a, ctx);
    return;
  }
  require_route(r);
  if (moe_one_token_layout(r, a)) {
    launch_pdl(moe_route_one_kernel, 1, 32, size_t(3) * r.num_experts * sizeof(float), ctx, r, a);
    DS_CUDA_CHECK_LAUNCH();
    return;
  }
  launch_pdl(moe_route_align_kernel, 1, route_align_warps(r, wide) * 32, smem, ctx, r, a);
  DS_CUDA_CHECK_LAUNCH();
}

}  // namespace ds::gpu
