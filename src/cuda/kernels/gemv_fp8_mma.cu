// FP8 GEMV at one row per group on the tensor cores (DeviceContext::switches.fp8_mma_gemv; run_gemv's FP8
// branch tries it first). Session 20's ncu of the batch-1 FP8 step: the CUDA-core GEMVs (gemv_async.cu,
// gemv_fp8.cu) reach 25-40% of the bandwidth, at ~3 instructions a weight (two e4m3 -> f32 conversions, the
// x values, an FMA); here a weight costs 1/512 of an mma.sync and 1/256 of a 16-byte copy.
//
// A block is 4 warps over one tile of 16 output columns (SiLU-mul: the 16 gate rows and the 16 matching up
// rows), the tile's K split four ways between the warps. The block loads its x row into shared memory with
// the GEMVs' prologue (load_x_tile: gather, fused RMSNorm or KDA output norm), then splits it per 64-column
// chunk into e4m3 hi and lo bytes under a power-of-two scale (x_split8, as the FP8 wgmma kernel's x split:
// x = s (hi + lo), exact for values within 224x of the chunk's largest). Per chunk of 64 k a warp runs two
// mma.sync m16n8k32 e4m3 per 16-row tile: A the weight bytes as they are, B columns 0 and 1 the x hi and lo
// (columns 2..7 zero), so D columns 0 + 1 are the row's product; the chunk's partial is scaled by its weight
// scale times s into an fp32 accumulator (scale blocks at least 64 columns wide).
// Fragments without shuffles: lane (g = lane / 4, q = lane % 4) copies bytes [16q, 16q + 16) of the chunk of
// weight rows g and g + 8 into its own slots of a per-warp cp.async ring (4-6 chunks ahead) and reads the
// same bytes of x column g: the chunk's k order is permuted alike for A and B (mma step s, logical k 4q + j
// and 16 + 4q + j, reads physical k 16q + 8s + j and 16q + 8s + 4 + j), so every fragment register is one
// 32-bit word of a lane's own 16-byte load. The batch-1 MoE down projection + combine (run_moe_down_combine)
// runs on the same MMAs (moe_down_combine_fp8_mma_kernel below).
#include <algorithm>

#include "cuda/kernels/gemv_common.cuh"

namespace ds::gpu::gemv_detail {
namespace {

constexpr int kMmaWarps = 4, kStages = 6, kChunk = 64;
// the GEMV's ring depth: 6 chunks a warp for one tile, 4 for SiLU-mul's two (5-6 blocks an SM at K 2,304:
// ~100-120 KB of weights in flight an SM)
template <int kTiles> constexpr int stages() { return kTiles == 2 ? 4 : kStages; }

__device__ __forceinline__ void mma_e4m3_16832(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                               uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// Splits `pieces` pieces of 8 bf16 values (load(i, v): piece i) into e4m3 hi and lo bytes at xh / xl + 8 i and a
// power-of-two scale per 64-value chunk at xsc[i / 8] (x_split8; the chunk's amax over its 8 threads by
// shuffles). All threads of the block; pieces a multiple of 8 (whole 8-lane groups share the bound check).
template <typename Load>
__device__ __forceinline__ void split_pieces(int pieces, const Load& load, uint8_t* xh, uint8_t* xl, float* xsc) {
  for (int i0 = 0; i0 < pieces; i0 += blockDim.x) {
    const int i = i0 + int(threadIdx.x);
    const bool ok = i < pieces;
    float v[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    if (ok) load(i, v);
    float amax = 0.f;
#pragma unroll
    for (int e = 0; e < 8; ++e) amax = fmaxf(amax, fabsf(v[e]));
#pragma unroll
    for (int o = 1; o < 8; o <<= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    uint2 h, l;
    const float s = x_split8(v, amax, h, l);
    if (ok) {
      *reinterpret_cast<uint2*>(xh + int64_t(i) * 8) = h;
      *reinterpret_cast<uint2*>(xl + int64_t(i) * 8) = l;
      if ((i & 7) == 0) xsc[i >> 3] = s;
    }
  }
}

// One 64-k chunk of 16 weight rows (ag: row g's 16 bytes, ag8: row g + 8's) times x column g's bytes b (hi for
// g 0, lo for g 1, zero otherwise: b_fragment): D columns 2q, 2q + 1 of rows g, g + 8.
__device__ __forceinline__ void chunk_mma(const uint4& ag, const uint4& ag8, const uint4& b, float (&d)[4]) {
  d[0] = d[1] = d[2] = d[3] = 0.f;
  mma_e4m3_16832(d, ag.x, ag8.x, ag.y, ag8.y, b.x, b.y);  // step 0: physical k 16q .. 16q + 7
  mma_e4m3_16832(d, ag.z, ag8.z, ag.w, ag8.w, b.z, b.w);  // step 1: 16q + 8 .. 16q + 15
}
__device__ __forceinline__ uint4 b_fragment(const uint8_t* xh, const uint8_t* xl, int64_t chunk_off, int g, int q) {
  return g < 2 ? *reinterpret_cast<const uint4*>((g == 0 ? xh : xl) + chunk_off + 16 * q) : make_uint4(0u, 0u, 0u, 0u);
}

// Shared memory: the per-warp rings (stages() chunks x tiles x rows g, g + 8 x 32 lanes x 16 bytes), the x
// row (bf16), its hi and lo bytes, a scale per chunk, and the warps' partial sums.
template <int kTiles> constexpr size_t ring_bytes() {
  return size_t(kMmaWarps) * stages<kTiles>() * kTiles * 2 * 32 * 16;
}
template <int kTiles> size_t smem_bytes(int K) {
  return ring_bytes<kTiles>() + size_t(K) * 2 + size_t(K) * 2 + size_t(K / kChunk) * 4 +
         size_t(kMmaWarps) * kTiles * 16 * 4;
}

template <typename OutT, GemvEpilogue Epi> __global__ void __launch_bounds__(kMmaWarps * 32)
    gemv_fp8_mma_kernel(GemvParams p) {
  using T = bf16;
  constexpr int kTiles = Epi == GemvEpilogue::SiluMul ? 2 : 1, kSt = stages<kTiles>();
  extern __shared__ __align__(16) unsigned char smem_raw[];
  uint4* ring = reinterpret_cast<uint4*>(smem_raw);
  T* xs = reinterpret_cast<T*>(smem_raw + ring_bytes<kTiles>());
  uint8_t* xh = reinterpret_cast<uint8_t*>(xs + p.K);
  uint8_t* xl = xh + p.K;
  float* xsc = reinterpret_cast<float*>(xl + p.K);
  float* red = xsc + p.K / kChunk;  // [warp][tile][16 rows]
  const int group = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
  const int c0 = int(blockIdx.x) * 16, chunks = p.K / kChunk;
  const int kc0 = warp * chunks / kMmaWarps, kc1 = (warp + 1) * chunks / kMmaWarps;
  uint4* my = ring + size_t(warp) * kSt * kTiles * 2 * 32;
  // weight row of this lane's row h (g, g + 8) of tile t (SiLU-mul tile 1: the up rows); past N: the last row
  // (its output is not stored)
  auto wrow = [&](int t, int h) {
    const int c = min(c0 + g + 8 * h, p.N - 1);
    return t == 0 ? c : p.N + c;
  };
  const uint8_t* W = nullptr;
  const float* S = nullptr;
  auto set_matrix = [&](int64_t m) {
    W = static_cast<const uint8_t*>(p.w) + m * p.w_matrix_stride;
    S = p.w_scale + m * p.scale_matrix_stride;
  };
  auto issue = [&](int j) {  // the warp's chunk j into stage j % kSt (always one commit group)
    const int kc = kc0 + j;
    if (kc < kc1) {
      uint4* st = my + size_t(j % kSt) * kTiles * 2 * 32;
#pragma unroll
      for (int t = 0; t < kTiles; ++t)
#pragma unroll
        for (int h = 0; h < 2; ++h)
          cp_async16(st + (t * 2 + h) * 32 + lane, W + int64_t(wrow(t, h)) * p.K + int64_t(kc) * kChunk + 16 * q);
    }
    cp_async_commit();
  };

  pdl_trigger();
  NormPre<T> pre;
  pre.load(p);
  int row0 = 0, rows = 0;
  if (!start_group_stream<kSt - 1>(p, group, row0, rows, set_matrix, issue)) return;
  const T* X = static_cast<const T*>(p.x) + int64_t(group) * p.x_group_stride;
  load_x_tile(p, xs, p.K, X, row0, 1, 0, p.K, pre);

  // the x split: 8 threads a 64-value chunk
  split_pieces(
      p.K / 8,
      [&](int i, float(&v)[8]) {
        Chunk8<T> c;
        c.load_shared(xs + i * 8);
        c.to_float(v);
      },
      xh, xl, xsc);
  __syncthreads();

  uint32_t soff[kTiles][2];
#pragma unroll
  for (int t = 0; t < kTiles; ++t)
#pragma unroll
    for (int h = 0; h < 2; ++h) soff[t][h] = uint32_t(wrow(t, h) >> p.scale_row_shift) * uint32_t(p.scale_ld);
  float acc[kTiles][2] = {};
  for (int j = 0; j < kc1 - kc0; ++j) {
    const int kc = kc0 + j;
    float ws[kTiles][2];
#pragma unroll
    for (int t = 0; t < kTiles; ++t)
#pragma unroll
      for (int h = 0; h < 2; ++h) ws[t][h] = __ldg(S + soff[t][h] + ((kc * kChunk) >> p.scale_k_shift));
    const float xscale = xsc[kc];
    const uint4 b = b_fragment(xh, xl, int64_t(kc) * kChunk, g, q);
    issue(j + kSt - 1);        // into the stage read last iteration
    cp_async_wait<kSt - 1>();  // this lane's copies of chunk j have landed
    const uint4* st = my + size_t(j % kSt) * kTiles * 2 * 32;
#pragma unroll
    for (int t = 0; t < kTiles; ++t) {
      const uint4 ag = st[(t * 2 + 0) * 32 + lane], ag8 = st[(t * 2 + 1) * 32 + lane];
      float d[4];
      chunk_mma(ag, ag8, b, d);
      acc[t][0] = fmaf(d[0] + d[1], ws[t][0] * xscale, acc[t][0]);  // row g: columns hi + lo (lanes q == 0)
      acc[t][1] = fmaf(d[2] + d[3], ws[t][1] * xscale, acc[t][1]);  // row g + 8
    }
  }
  cp_async_wait<0>();

  // the four warps' partial sums (lanes q == 0 hold them), summed in shared memory; thread r < 16 stores row r
  if (q == 0)
#pragma unroll
    for (int t = 0; t < kTiles; ++t)
#pragma unroll
      for (int h = 0; h < 2; ++h) red[(warp * kTiles + t) * 16 + g + 8 * h] = acc[t][h];
  __syncthreads();
  if (threadIdx.x < 16 && c0 + int(threadIdx.x) < p.N) {
    const int c = c0 + int(threadIdx.x);
    float s[kTiles];
#pragma unroll
    for (int t = 0; t < kTiles; ++t) {
      s[t] = 0.f;
#pragma unroll
      for (int w = 0; w < kMmaWarps; ++w) s[t] += red[(w * kTiles + t) * 16 + threadIdx.x];
    }
    OutT* y = static_cast<OutT*>(p.y) + int64_t(group) * p.y_group_stride + int64_t(row0) * p.ldy;
    if constexpr (Epi == GemvEpilogue::SiluMul) {
      y[c] = from_f32<OutT>(siluf_(s[0]) * s[kTiles - 1]);
    } else if constexpr (Epi == GemvEpilogue::Accumulate) {
      y[c] = from_f32<OutT>(to_f32(y[c]) + s[0]);
    } else {
      y[c] = from_f32<OutT>(s[0]);
    }
  }
}

template <typename OutT, GemvEpilogue Epi> void launch_mma(const GemvParams& p, const DeviceContext& ctx) {
  constexpr int kTiles = Epi == GemvEpilogue::SiluMul ? 2 : 1;
  launch_pdl(gemv_fp8_mma_kernel<OutT, Epi>, dim3(unsigned(ceil_div(p.N, 16)), unsigned(p.num_groups)), kMmaWarps * 32,
             smem_bytes<kTiles>(p.K), ctx, p);
}

// One token's MoE down projection + combine (run_moe_down_combine's FP8 form) on the same MMAs: a block of
// kDcWarps warps owns 16 output columns; the (pair, 64-column chunk) items of all pairs are split evenly
// between the warps (a warp's range may start or end inside a pair), each streaming its items' 16 weight
// rows of the pair's expert through its ring. The block splits every
// pair's activation row into hi/lo per 64 columns first (after PDL's wait: the gate/up launch writes them),
// while the first chunks' copies are in flight. residual[c] += sum over pairs of weight_j * (W_e act_j)[c].
constexpr int kDcWarps = 8;
size_t dc_smem_bytes(int k, int I) {
  return size_t(kDcWarps) * kStages * 2 * 32 * 16 + size_t(k) * I * 2 + size_t(k) * (I / kChunk) * 4 +
         size_t(kDcWarps) * 16 * 4;
}

__global__ void __launch_bounds__(kDcWarps * 32) moe_down_combine_fp8_mma_kernel(MoeDownCombineParams p) {
  using T = bf16;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  uint4* ring = reinterpret_cast<uint4*>(smem_raw);
  uint8_t* xh = smem_raw + size_t(kDcWarps) * kStages * 2 * 32 * 16;  // [k][I] hi bytes, then [k][I] lo
  uint8_t* xl = xh + size_t(p.k) * p.I;
  float* xsc = reinterpret_cast<float*>(xl + size_t(p.k) * p.I);  // [k][I / 64]
  float* red = xsc + size_t(p.k) * (p.I / kChunk);                // [warp][16 rows]
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
  const int c0 = int(blockIdx.x) * 16, chunks = p.I / kChunk;
  const int it0 = warp * p.k * chunks / kDcWarps, it1 = (warp + 1) * p.k * chunks / kDcWarps;  // this warp's items
  const int items = it1 - it0;
  uint4* my = ring + size_t(warp) * kStages * 2 * 32;
  const int r[2] = {min(c0 + g, p.D - 1), min(c0 + g + 8, p.D - 1)};  // this lane's weight rows
  auto issue = [&](int it) {  // the warp's item it (pair (it0 + it) / chunks, its chunk) into stage it % kStages
    if (it < items) {
      const int j = (it0 + it) / chunks, kc = (it0 + it) % chunks;
      const uint8_t* W = static_cast<const uint8_t*>(p.w) + int64_t(p.ids[j]) * p.D * p.I;
      uint4* st = my + size_t(it % kStages) * 2 * 32;
#pragma unroll
      for (int h = 0; h < 2; ++h)
        cp_async16(st + h * 32 + lane, W + int64_t(r[h]) * p.I + int64_t(kc) * kChunk + 16 * q);
    }
    cp_async_commit();
  };
  pdl_trigger();
  pdl_wait();
#pragma unroll
  for (int j = 0; j < kStages - 1; ++j) issue(j);
  // every pair's activation row split into hi/lo per 64 columns (piece i: pair i / per_row, its 8 columns;
  // its bytes at 8 i = j I + c)
  const int per_row = p.I / 8;
  split_pieces(
      p.k * per_row,
      [&](int i, float(&v)[8]) {
        Chunk8<T> x;
        x.load_global(static_cast<const T*>(p.act) + int64_t(p.pair_pos[i / per_row]) * p.I + (i % per_row) * 8);
        x.to_float(v);
      },
      xh, xl, xsc);
  __syncthreads();

  float tot[2] = {0.f, 0.f}, part[2] = {0.f, 0.f};
  for (int it = 0; it < items; ++it) {
    const int j = (it0 + it) / chunks, kc = (it0 + it) % chunks;
    const int e = p.ids[j];
    const float* S = p.w_scale + int64_t(e) * p.scale_matrix_stride;
    float ws[2];
#pragma unroll
    for (int h = 0; h < 2; ++h)
      ws[h] = __ldg(S + int64_t(r[h] >> p.scale_row_shift) * p.scale_ld + ((kc * kChunk) >> p.scale_k_shift));
    const float xscale = xsc[j * chunks + kc];
    const uint4 b = b_fragment(xh, xl, int64_t(j) * p.I + int64_t(kc) * kChunk, g, q);
    issue(it + kStages - 1);
    cp_async_wait<kStages - 1>();
    const uint4* st = my + size_t(it % kStages) * 2 * 32;
    const uint4 ag = st[lane], ag8 = st[32 + lane];
    float d[4];
    chunk_mma(ag, ag8, b, d);
    part[0] = fmaf(d[0] + d[1], ws[0] * xscale, part[0]);
    part[1] = fmaf(d[2] + d[3], ws[1] * xscale, part[1]);
    if (kc == chunks - 1 || it == items - 1) {  // the pair's part in this warp done: into the combine
      const float wj = p.weights[j];
      tot[0] = fmaf(wj, part[0], tot[0]);
      tot[1] = fmaf(wj, part[1], tot[1]);
      part[0] = part[1] = 0.f;
    }
  }
  cp_async_wait<0>();
  if (q == 0) {
    red[warp * 16 + g] = tot[0];
    red[warp * 16 + g + 8] = tot[1];
  }
  __syncthreads();
  if (threadIdx.x < 16 && c0 + int(threadIdx.x) < p.D) {
    float sum = 0.f;
#pragma unroll
    for (int w = 0; w < kDcWarps; ++w) sum += red[w * 16 + threadIdx.x];
    T* y = static_cast<T*>(p.residual) + c0 + threadIdx.x;
    *y = from_f32<T>(to_f32(*y) + sum);
  }
}

}  // namespace
}  // namespace ds::gpu::gemv_detail

namespace ds::gpu {

namespace {
// What both kernels need: the switch, FP8 weights (16-byte aligned) with scale blocks of 64+ columns, bf16
// activations, a reduction length of whole 64-column chunks, e4m3 mma.sync (sm_89+), the shared memory.
bool mma_applies(const DeviceContext& ctx, DType act, const float* w_scale, bool w_int4, const void* w, int K,
                 int scale_k_shift, size_t smem) {
  const int sm = ctx.info.sm_major * 10 + ctx.info.sm_minor;
  return ctx.switches.fp8_mma_gemv && w_scale && !w_int4 && act == DType::BF16 && sm >= 89 &&
         K % gemv_detail::kChunk == 0 && scale_k_shift >= 6 && reinterpret_cast<uintptr_t>(w) % 16 == 0 &&
         smem <= size_t(gemv_detail::kMaxSmem);
}
}  // namespace

bool fp8_mma_gemv_applies(const GemvParams& p, DType act, const DeviceContext& ctx) {
  const int row_bound = p.group_start ? p.max_rows : p.M;
  const bool chosen = ctx.switches.fp8_mma_gemv == 1 || p.epi == GemvEpilogue::SiluMul || p.N >= p.K;  // (2: these)
  return chosen && row_bound == 1 && p.ldx % 8 == 0 && p.w_matrix_stride % 16 == 0 &&
         mma_applies(ctx, act, p.w_scale, p.w_int4, p.w, p.K, p.scale_k_shift, gemv_detail::smem_bytes<2>(p.K));
}

bool fp8_mma_down_combine_applies(const MoeDownCombineParams& p, DType act, const DeviceContext& ctx) {
  return ctx.switches.fp8_mma_gemv == 1 && mma_applies(ctx, act, p.w_scale, p.w_int4, p.w, p.I, p.scale_k_shift, gemv_detail::dc_smem_bytes(p.k, p.I));
}

}  // namespace ds::gpu

namespace ds::gpu::gemv_detail {

bool run_moe_down_combine_fp8_mma(const MoeDownCombineParams& p, DType act, const DeviceContext& ctx) {
  if (!fp8_mma_down_combine_applies(p, act, ctx)) return false;
  launch_pdl(moe_down_combine_fp8_mma_kernel, dim3(unsigned(ceil_div(p.D, 16))), kDcWarps * 32, dc_smem_bytes(p.k, p.I),
             ctx, p);
  DS_CUDA_CHECK_LAUNCH();
  return true;
}

bool run_gemv_fp8_mma(const GemvParams& p, DType act, const DeviceContext& ctx) {
  if (!fp8_mma_gemv_applies(p, act, ctx)) return false;
  switch (p.epi) {
    case GemvEpilogue::Store:
      if (p.y_f32) launch_mma<float, GemvEpilogue::Store>(p, ctx);
      else launch_mma<bf16, GemvEpilogue::Store>(p, ctx);
      break;
    case GemvEpilogue::SiluMul: launch_mma<bf16, GemvEpilogue::SiluMul>(p, ctx); break;
    case GemvEpilogue::Accumulate: launch_mma<bf16, GemvEpilogue::Accumulate>(p, ctx); break;
  }
  DS_CUDA_CHECK_LAUNCH();
  return true;
}

void configure_gemv_fp8_mma() {
  set_max_dynamic_smem(gemv_fp8_mma_kernel<float, GemvEpilogue::Store>, kMaxSmem);
  set_max_dynamic_smem(gemv_fp8_mma_kernel<bf16, GemvEpilogue::Store>, kMaxSmem);
  set_max_dynamic_smem(gemv_fp8_mma_kernel<bf16, GemvEpilogue::SiluMul>, kMaxSmem);
  set_max_dynamic_smem(gemv_fp8_mma_kernel<bf16, GemvEpilogue::Accumulate>, kMaxSmem);
  set_max_dynamic_smem(moe_down_combine_fp8_mma_kernel, kMaxSmem);
}

}  // namespace ds::gpu::gemv_detail
