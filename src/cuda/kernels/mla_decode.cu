// Absorbed MLA decode (see mla_decode.h): split-K attention kernel and the combine kernel.
//
// Attention CTA = one (row, split), W = 8 or 16 warps, key tiles of kTile cached positions:
//   scores  S[32 heads][kTile] = Q[32][576]·Kᵀ: warp (key group nh = warp % (W/4), dim quarter
//           kq = warp / (W/4)) computes a 32 x kTile/(W/4) partial over 144 dims; the four partials are
//           summed in shared memory (bf16 with 8 warps: the warp's Q fragments stay in registers for the
//           whole context; with 16 they are reloaded from shared memory, within 128 registers a thread);
//   softmax online per head (W threads per head), P in the activation type;
//   output  O[32][512] += P·C[:, 0:512]: warp w owns latent columns (512/W)·w.. (512/W fp32 accumulators).
// 16 warps (bf16 only): the same shared memory, twice the warps to hide each phase's latency (one CTA per
// SM either way: the kernel is latency-bound at one CTA of 8 warps, docs/PERF.md).
// Heads past H are zero rows. The cache tiles are gathered row by row through the block table with
// cp.async (two stages for bf16).
// FP8 cache (F8): the stages hold the raw rows (576 e4m3 bytes + the fp32 scale, kF8Row bytes); once a
// tile has landed it is converted to one tile in the activation type (e4m3 is exact in bf16 and fp32) and
// the rows' scales go to sm.ks: scores are scaled by ks[j] and P·ks[j] multiplies the values, so the
// scale never rounds the cached values themselves.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>

#include "cuda/cuda_check.h"
#include "cuda/kernels/common.cuh"
#include "cuda/kernels/fp8_codec.cuh"
#include "cuda/kernels/kda_mma.cuh"
#include "cuda/kernels/mla_decode.h"
#include "cuda/kernels/mla_decode_common.cuh"
#include "cuda/kernels/mla_decode_f8.h"
#include "cuda/kernels/mla_decode_wgmma.h"

namespace ds::gpu {
namespace {

using namespace attn;
using namespace mla_dec;

// kTile cached positions per tile, kStages tiles in shared memory (kStages - 1 in flight while one is
// computed on). bf16: 64 x 2 (the default) or 32 x 4 (more bytes in flight: long contexts, see
// MlaDecodeParams::kv_tile); fp32: 32 x 1.
template <typename IO, int Tile, int Stages> struct DecodeCfg {
  static constexpr int kTile = Tile;
  static constexpr int kStages = Stages;
  static constexpr int kLdC = padded_ld<IO>(kQk);
  static constexpr int kLdS = kTile + 4;
  static constexpr int kLdP = padded_ld<IO>(kTile);
};

template <typename IO, int Tile, int Stages, bool F8> struct DecodeSmem {
  using C = DecodeCfg<IO, Tile, Stages>;
  IO tile[F8 ? 1 : C::kStages][C::kTile][C::kLdC];
  IO q[kRows][C::kLdC];
  alignas(16) float s[4][kRows][C::kLdS];
  IO p[kRows][C::kLdP];
  float m[kRows], l[kRows], alpha[kRows];
  // FP8: the raw rows in flight and the current tile's scales. One stage (kAliasRaw): the raw rows land in
  // the space of s and p, which are free from the end of one tile's P.V until its successor's conversion.
  static constexpr bool kAliasRaw = F8 && Stages == 1;
  alignas(16) uint8_t raw[F8 && !kAliasRaw ? C::kStages : 1][F8 && !kAliasRaw ? C::kTile : 1][F8 ? kF8Row : 16];
  float ks[F8 ? C::kTile : 1];
};

static_assert(sizeof(DecodeSmem<bf16, 64, 2, true>) <= 232448,
              "FP8 decode tiles beyond the 227 KiB of shared memory");
// The single-stage forms (two CTAs an SM): the FP8 raw rows fit over s and p, which lie back to back.
using Smem1F8 = DecodeSmem<bf16, 32, 1, true>;
static_assert(sizeof(Smem1F8::s) + sizeof(Smem1F8::p) >= 32 * kF8Row &&
                  offsetof(Smem1F8, p) == offsetof(Smem1F8, s) + sizeof(Smem1F8::s),
              "FP8 raw rows over s and p");
using Smem1F8f = DecodeSmem<float, 32, 1, true>;  // (the fp32 path's single stage aliases them too)
static_assert(sizeof(Smem1F8f::s) + sizeof(Smem1F8f::p) >= 32 * kF8Row &&
                  offsetof(Smem1F8f, p) == offsetof(Smem1F8f, s) + sizeof(Smem1F8f::s),
              "FP8 raw rows over s and p (fp32)");
static_assert(2 * (sizeof(DecodeSmem<bf16, 32, 1, true>) + 1024) <= 233472 &&
                  2 * (sizeof(DecodeSmem<bf16, 32, 1, false>) + 1024) <= 233472,
              "two single-stage decode CTAs an SM");

template <typename IO, int Tile, int Stages, bool F8, int W, int CtasPerSm = 1>
__global__ void __launch_bounds__(W * 32, CtasPerSm) mla_decode_kernel(MlaDecodeParams p) {
  using Mma = typename MmaFor<IO>::type;
  using C = DecodeCfg<IO, Tile, Stages>;
  static_assert(W == 8 || W == 16, "8 or 16 warps");
  constexpr int kThreads = W * 32;
  constexpr int kTile = C::kTile, kLdC = C::kLdC, kLdP = C::kLdP;
  constexpr int kKG = W / 4;                   // key groups of the scores (x 4 dim quarters = W warps)
  constexpr int kKeys = kTile / kKG;           // keys of one group
  constexpr int kNT = kKeys / 8;               // n8 tiles per key group
  static_assert(kNT >= 1, "a key group of at least 8 positions");
  constexpr int kKSteps = 144 / Mma::kK;       // per dim quarter
  constexpr int kCols = kLat / W;              // output columns of one warp
  constexpr int kNO = kCols / 8;               // their n8 tiles
  constexpr int kTph = kThreads / kRows;       // softmax threads per head
  constexpr bool kCacheQ = sizeof(IO) == 2 && W == 8 && CtasPerSm == 1;  // Q fragments in registers (72 of them)
  using Smem = DecodeSmem<IO, Tile, Stages, F8>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  pdl_trigger();  // (launched with PDL: everything below may depend on the previous kernel)
  pdl_wait();
  auto& sm = *reinterpret_cast<Smem*>(smem_raw);
  // FP8: stage st's raw rows (single stage: over s and p)
  auto raw_stage = [&](int st) -> uint8_t(*)[kF8Row] {
    if constexpr (Smem::kAliasRaw) return reinterpret_cast<uint8_t(*)[kF8Row]>(&sm.s[0][0][0]);
    else return reinterpret_cast<uint8_t(*)[kF8Row]>(&sm.raw[st][0][0]);
  };
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int sp = blockIdx.x, r = blockIdx.y, H = p.num_heads;
  const int ctx = p.context_lens[r];
  const int tiles = (ctx + kTile - 1) / kTile;
  const int per = (tiles + p.num_splits - 1) / p.num_splits;
  const int tile0 = sp * per, tile1 = min(tiles, tile0 + per);
  const int32_t* bt = p.block_tables + int64_t(r) * p.max_blocks;
  const IO* cache = static_cast<const IO*>(p.cache);
  const uint8_t* cache8 = static_cast<const uint8_t*>(p.cache);
  constexpr int kRowUnits = F8 ? kF8Row : kQk;  // a cache row in offset units (bytes for FP8, else elements)

  // Tile gather: kThrPerRow threads per cached row, so each thread looks up one block-table entry
  // per tile; the entry for the next tile to issue is fetched a tile ahead (its latency hides behind
  // compute).
  constexpr int kThrPerRow = kThreads / kTile;
  const int grow = tid / kThrPerRow, gsub = tid % kThrPerRow;
  auto row_offset = [&](int t) -> int64_t {  // element offset of row grow of tile t, -1 past the end
    const int pos = t * kTile + grow;
    if (t >= tile1 || pos >= ctx) return -1;
    return (int64_t(bt[pos / p.block_size]) * p.block_size + pos % p.block_size) * kRowUnits;
  };
  auto issue = [&](int t, int64_t off) {
    if (t < tile1) {
      if constexpr (F8) {
        uint8_t* dst = &raw_stage((t - tile0) % C::kStages)[grow][0];
        for (int c = gsub; c < kF8Row / 16; c += kThrPerRow)
          cp_async16(dst + c * 16, off >= 0 ? cache8 + off + c * 16 : cache8, off >= 0);
      } else {
        constexpr int kVecs = kQk * int(sizeof(IO)) / 16;
        constexpr int kPer = 16 / int(sizeof(IO));
        IO* dst = &sm.tile[(t - tile0) % C::kStages][grow][0];
        for (int c = gsub; c < kVecs; c += kThrPerRow)
          cp_async16(dst + c * kPer, off >= 0 ? cache + off + c * kPer : cache, off >= 0);
      }
    }
    cp_async_commit();
  };

  // Q (rows >= H zero), running stats.
  load_tile_async(&sm.q[0][0], kLdC, static_cast<const IO*>(p.q) + int64_t(r) * p.ldq, kQk, kRows, kQk, H, tid,
                  kThreads);
  cp_async_commit();
  if (tid < kRows) {
    sm.m[tid] = -INFINITY;
    sm.l[tid] = 0.f;
  }
  // L2 prefetch (bf16): the tile pf_dist tiles beyond the shared-memory pipeline is requested into L2 by
  // bulk prefetches, one per page part (thread i < kTile: the i-th page the tile touches), so the
  // pipeline's loads hit L2 rather than wait for DRAM; each thread's page entry is looked up an
  // iteration ahead, like next_off.
  const int pf_dist = C::kStages > 1 || sizeof(IO) == 2 ? p.l2_prefetch_tiles : 0;
  auto pf_entry = [&](int u) -> PagePart {
    if (pf_dist <= 0 || tid >= kTile || u >= tile1) return PagePart{-1, 0};
    return tile_page_part(bt, p.block_size, u * kTile, kTile, ctx, tid, kRowUnits,
                          F8 ? uint32_t(kF8Row) : kQk * uint32_t(sizeof(IO)));
  };
  auto pf_issue = [&](const PagePart& e) {
    if (e.off < 0) return;
    if constexpr (F8) prefetch_l2_bulk(cache8 + e.off, e.bytes);
    else prefetch_l2_bulk(cache + e.off, e.bytes);
  };
  for (int d = 0; d < pf_dist; ++d) pf_issue(pf_entry(tile0 + C::kStages - 1 + d));
  PagePart next_pf = pf_entry(tile0 + C::kStages - 1 + pf_dist);

  int64_t next_off = row_offset(tile0);
#pragma unroll
  for (int i = 0; i + 1 < C::kStages; ++i) {  // tiles tile0 .. tile0 + kStages - 2 in flight
    issue(tile0 + i, next_off);
    next_off = row_offset(tile0 + i + 1);
  }
  cp_async_wait<C::kStages - 1>();  // Q has landed (the prefetched tiles may still be in flight)
  __syncthreads();

  const int nh = warp % kKG, kq = warp / kKG;
  [[maybe_unused]] typename Mma::A qa[kCacheQ ? kKSteps : 1][2];
  if constexpr (kCacheQ) {
#pragma unroll
    for (int ks = 0; ks < kKSteps; ++ks)
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) qa[ks][mt] = Mma::load_a(&sm.q[16 * mt][144 * kq + ks * Mma::kK], kLdC, lane);
  }

  float o[2][kNO][4] = {};
  const float scale_log2 = p.scale * kLog2e;
  for (int t = tile0; t < tile1; ++t) {
    if constexpr (C::kStages == 1) {
      issue(t, next_off);
      next_off = row_offset(t + 1);
      if (pf_dist > 0) {  // (bf16 activations) the tile pf_dist ahead into L2 while this one lands
        pf_issue(next_pf);
        next_pf = pf_entry(t + 1 + pf_dist);
      }
      cp_async_wait<0>();
    } else {
      cp_async_wait<C::kStages - 2>();  // tile t has landed; the later ones may be in flight
    }
    __syncthreads();
    if constexpr (C::kStages > 1) {  // into the stage computed on last iteration (freed by its barrier)
      issue(t + C::kStages - 1, next_off);
      next_off = row_offset(t + C::kStages);
      if (pf_dist > 0) {
        pf_issue(next_pf);
        next_pf = pf_entry(t + C::kStages + pf_dist);
      }
    }
    if constexpr (F8) {  // the landed raw rows -> the activation-type tile (exact) and the rows' scales
      const uint8_t(*raw)[kF8Row] = raw_stage((t - tile0) % C::kStages);
      for (int i = tid; i < kTile * (kQk / 16); i += kThreads) {
        const int j = i / (kQk / 16), c = (i % (kQk / 16)) * 16;
        float f[16];
        from_e4m3x16(*reinterpret_cast<const uint4*>(&raw[j][c]), f);
#pragma unroll
        for (int h = 0; h < 16; h += Vec16<IO>::N) {
          Vec16<IO> v;
          v.from_float(f + h);
          v.store(&sm.tile[0][j][c + h]);
        }
      }
      if (tid < kTile) sm.ks[tid] = *reinterpret_cast<const float*>(&raw[tid][kQk]);
      __syncthreads();
    }
    const IO(*tl)[kLdC] = sm.tile[F8 ? 0 : (t - tile0) % C::kStages];

    // ---- partial scores over this warp's 144 dims and kTile/2 keys
    float acc[2][kNT][4] = {};
#pragma unroll
    for (int ks = 0; ks < kKSteps; ++ks) {
      const int d0 = 144 * kq + ks * Mma::kK;
      typename Mma::A a[2];
      if constexpr (kCacheQ) {
        a[0] = qa[ks][0];
        a[1] = qa[ks][1];
      } else {
        a[0] = Mma::load_a(&sm.q[0][d0], kLdC, lane);
        a[1] = Mma::load_a(&sm.q[16][d0], kLdC, lane);
      }
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
        const typename Mma::B b = Mma::load_b(&tl[nh * kKeys + 8 * nt][d0], kLdC, lane);
        Mma::mma(acc[0][nt], a[0], b);
        Mma::mma(acc[1][nt], a[1], b);
      }
    }
    store_partial_scores(sm.s[kq], acc, nh * kKeys, lane);
    __syncthreads();

    // ---- online softmax: kTph threads per head row
    online_softmax_tile<IO, F8, kTile, kTph>(sm.s, sm.ks, t * kTile, ctx, scale_log2, tid, sm.p, sm.alpha, sm.m, sm.l);
    __syncthreads();

    // ---- O = O·diag(alpha) + P·C[:, kCols·w .. kCols·w + kCols - 1]
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float a = sm.alpha[16 * mt + c_row(e, lane)];
#pragma unroll
        for (int nt = 0; nt < kNO; ++nt) o[mt][nt][e] *= a;
      }
    {
      // The tensor cores' fp32 accumulation truncates; over thousands of keys that bias shows at the
      // 1e-5 level, so the fp32 path sums each tile into fresh accumulators and adds them in IEEE fp32.
      constexpr bool kSplit = Mma::kSplitAccum;
      float tacc[kSplit ? 2 : 1][kSplit ? kNO : 1][4] = {};
#pragma unroll
      for (int j0 = 0; j0 < kTile; j0 += Mma::kK) {
        const typename Mma::A a0 = Mma::load_a(&sm.p[0][j0], kLdP, lane);
        const typename Mma::A a1 = Mma::load_a(&sm.p[16][j0], kLdP, lane);
#pragma unroll
        for (int nt = 0; nt < kNO; ++nt) {
          const typename Mma::B b = Mma::load_b_km(&tl[j0][kCols * warp + 8 * nt], kLdC, lane);
          if constexpr (kSplit) {
            Mma::mma(tacc[0][nt], a0, b);
            Mma::mma(tacc[1][nt], a1, b);
          } else {
            Mma::mma(o[0][nt], a0, b);
            Mma::mma(o[1][nt], a1, b);
          }
        }
      }
      if constexpr (kSplit) {
#pragma unroll
        for (int mt = 0; mt < 2; ++mt)
#pragma unroll
          for (int nt = 0; nt < kNO; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) o[mt][nt][e] += tacc[mt][nt][e];
      }
    }
    __syncthreads();  // P, alpha and the stage are reused by the next tile
  }
  cp_async_wait<0>();

  // ---- write: final output (one split) or the normalised partial and its log2-sum-exp
  write_decode_output<IO>(p, o, sm.l, kCols * warp, r, sp, lane);
  if (tid < kRows) write_decode_lse(p, sm.m, sm.l, r, sp, tid);
}

// One CTA of kCombineWarps warps per (row, head, 128 latent columns): ō = Σ_s 2^(lse_s − max) · ō_s /
// Σ_s 2^(lse_s − max). The splits are spread over the warps (warp w takes w, w + 8, ...; a lane its 4
// columns), so a long context's 132+ partials are read with many loads in flight rather than one
// dependent chain; the warps' sums meet in shared memory.
constexpr int kCombineWarps = 8;

template <typename IO>
__global__ void __launch_bounds__(kCombineWarps * 32) mla_combine_kernel(MlaDecodeParams p) {
  pdl_trigger();
  pdl_wait();
  __shared__ float scratch[32];
  __shared__ float4 part_sum[kCombineWarps][32];
  __shared__ float part_w[kCombineWarps];
  const int r = blockIdx.x, h = blockIdx.y, H = p.num_heads, ns = p.num_splits;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const float* part = static_cast<const float*>(p.workspace);
  const float* lse = part + int64_t(p.rows) * ns * H * kLat;
  const int64_t row0 = int64_t(r) * ns * H + h;  // split s at row0 + s·H
  float mx = -INFINITY;
  for (int s = threadIdx.x; s < ns; s += kCombineWarps * 32) mx = fmaxf(mx, lse[row0 + int64_t(s) * H]);
  mx = block_max(mx, scratch);
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
  float wsum = 0.f;
  const int f = 128 * blockIdx.z + 4 * lane;
  if (mx > -INFINITY) {
#pragma unroll 4
    for (int s = warp; s < ns; s += kCombineWarps) {
      const int64_t row = row0 + int64_t(s) * H;
      const float w = exp2f(lse[row] - mx);  // 0 for empty splits (lse = -inf)
      const float4 x = *reinterpret_cast<const float4*>(part + row * kLat + f);
      acc.x = fmaf(w, x.x, acc.x);
      acc.y = fmaf(w, x.y, acc.y);
      acc.z = fmaf(w, x.z, acc.z);
      acc.w = fmaf(w, x.w, acc.w);
      wsum += w;
    }
  }
  part_sum[warp][lane] = acc;
  if (lane == 0) part_w[warp] = wsum;
  __syncthreads();
  if (warp != 0) return;
  float4 t = part_sum[0][lane];
  float tw = part_w[0];
#pragma unroll
  for (int w = 1; w < kCombineWarps; ++w) {
    const float4 y = part_sum[w][lane];
    t.x += y.x;
    t.y += y.y;
    t.z += y.z;
    t.w += y.w;
    tw += part_w[w];
  }
  const float inv = tw > 0.f ? 1.f / tw : 0.f;
  IO* dst = static_cast<IO*>(p.o) + int64_t(r) * p.ldo + h * kLat + f;
  if constexpr (sizeof(IO) == 2) {
    *reinterpret_cast<uint2*>(dst) = make_uint2(pack_bf16(t.x * inv, t.y * inv), pack_bf16(t.z * inv, t.w * inv));
  } else {
    *reinterpret_cast<float4*>(dst) = make_float4(t.x * inv, t.y * inv, t.z * inv, t.w * inv);
  }
}

template <typename IO> void launch_combine(const MlaDecodeParams& p, const DeviceContext& ctx) {
  if (p.num_splits > 1) {
    launch_pdl(mla_combine_kernel<IO>, dim3(p.rows, p.num_heads, kLat / 128), kCombineWarps * 32, 0, ctx, p);
    DS_CUDA_CHECK_LAUNCH();
  }
}

template <typename IO, int Tile, int Stages, bool F8 = false, int W = 8, int CtasPerSm = 1>
void launch_decode(const MlaDecodeParams& p, const DeviceContext& ctx) {
  const size_t smem = sizeof(DecodeSmem<IO, Tile, Stages, F8>);
  launch_pdl(mla_decode_kernel<IO, Tile, Stages, F8, W, CtasPerSm>, dim3(p.num_splits, p.rows), W * 32, smem, ctx, p);
  DS_CUDA_CHECK_LAUNCH();
  launch_combine<IO>(p, ctx);
}

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

}  // namespace

void configure_mla_decode(const DeviceContext& ctx) {
  auto both = [](auto k8, auto k16, size_t bytes) {
    set_max_dynamic_smem(k8, bytes);
    set_max_dynamic_smem(k16, bytes);
  };
  both(mla_decode_kernel<bf16, 64, 2, false, 8>, mla_decode_kernel<bf16, 64, 2, false, 16>,
       sizeof(DecodeSmem<bf16, 64, 2, false>));
  both(mla_decode_kernel<bf16, 32, 4, false, 8>, mla_decode_kernel<bf16, 32, 4, false, 16>,
       sizeof(DecodeSmem<bf16, 32, 4, false>));
  both(mla_decode_kernel<bf16, 64, 2, true, 8>, mla_decode_kernel<bf16, 64, 2, true, 16>,
       sizeof(DecodeSmem<bf16, 64, 2, true>));
  both(mla_decode_kernel<bf16, 32, 4, true, 8>, mla_decode_kernel<bf16, 32, 4, true, 16>,
       sizeof(DecodeSmem<bf16, 32, 4, true>));
  // two CTAs an SM: 32-position tiles, one stage, the shared memory carved out to the maximum
  auto two = [](auto k, size_t bytes) {
    set_max_dynamic_smem(k, bytes);
    DS_CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributePreferredSharedMemoryCarveout, int(cudaSharedmemCarveoutMaxShared)));
  };
  two(mla_decode_kernel<bf16, 32, 1, false, 8, 2>, sizeof(DecodeSmem<bf16, 32, 1, false>));
  two(mla_decode_kernel<bf16, 32, 1, true, 8, 2>, sizeof(DecodeSmem<bf16, 32, 1, true>));
  set_max_dynamic_smem(mla_decode_kernel<float, 32, 1, false, 8>, sizeof(DecodeSmem<float, 32, 1, false>));
  set_max_dynamic_smem(mla_decode_kernel<float, 32, 1, true, 8>, sizeof(DecodeSmem<float, 32, 1, true>));
  configure_mla_decode_wgmma(ctx);
  configure_mla_decode_f8(ctx);
}

int choose_mla_decode_splits(int rows, int max_context_len, int num_sms, int ctas_per_sm) {
  if (rows <= 0 || max_context_len <= 0) return 1;
  // One CTA per SM (the kernel uses most of the shared memory; two with MlaDecodeParams::ctas_per_sm 2): as
  // many splits as fill one wave without a partial second one; a split covers >= 1 tile of 64 positions
  // (batch 1 at a 1k context: 16 splits of one tile, measured 22.8 us with 4 splits of four).
  const int slots = num_sms * std::max(1, ctas_per_sm);  // CTAs of one wave
  const int want = std::max(1, slots / rows);
  const int cap = std::max(1, max_context_len / 64);
  int splits = std::max(1, std::min({want, cap, 256}));
  // Long contexts: when rows x splits CTAs leave the last wave (one CTA per SM) mostly empty, the first
  // larger count that fills the waves to >= 95%, each split keeping >= 1024 positions and the CTAs within
  // kMlaDecodeMaxCtasPerSm waves (e.g. 100 rows over 131K positions: 9 splits, 900 CTAs in 7 waves).
  auto fill = [&](int n) {
    const int64_t ctas = int64_t(rows) * n, waves = (ctas + slots - 1) / slots;
    return double(ctas) / double(waves * slots);
  };
  const int long_cap = std::min(256, max_context_len / 1024);
  if (fill(splits) < 0.95)
    for (int n = splits + 1; n <= long_cap && int64_t(rows) * n <= int64_t(kMlaDecodeMaxCtasPerSm) * num_sms; ++n)
      if (fill(n) >= 0.95) {
        splits = n;
        break;
      }
  return splits;
}

bool choose_mla_decode_pipe(int switch_value, int max_context_len, int num_splits) {
  if (switch_value >= 0) return switch_value > 0;
  const int64_t per_split = (int64_t(max_context_len) + std::max(1, num_splits) - 1) / std::max(1, num_splits);
  return per_split >= kMlaDecodePipeMinPositions;
}

size_t mla_decode_workspace_bytes(int rows, int num_heads, int num_splits) {
  if (num_splits <= 1) return 0;
  return size_t(rows) * num_splits * num_heads * (kLat + 1) * sizeof(float);
}

void run_mla_decode(const MlaDecodeParams& p0, DType act, const DeviceContext& ctx) {
  MlaDecodeParams p = p0;
  DS_GPU_REQUIRE(act == DType::BF16 || act == DType::F32, "mla decode: activations must be bf16 or fp32");
  DS_GPU_REQUIRE(p.kv_lora_rank == kLat && p.rope_dim == kRope, "mla decode: only kv_lora_rank 512 + rope 64");
  DS_GPU_REQUIRE(p.num_heads >= 1 && p.num_heads <= kRows,
                 "mla decode: num_heads must be in [1, 32], got " + std::to_string(p.num_heads));
  DS_GPU_REQUIRE(p.rows >= 0 && p.block_size > 0 && p.max_blocks > 0 && p.num_splits >= 1, "mla decode: bad sizes");
  if (p.rows == 0) return;
  DS_GPU_REQUIRE(p.q && p.cache && p.block_tables && p.context_lens && p.o, "mla decode: null pointer argument");
  DS_GPU_REQUIRE(p.num_splits == 1 || p.workspace, "mla decode: workspace required when num_splits > 1");
  if (p.ldq == 0) p.ldq = int64_t(p.num_heads) * kQk;
  if (p.ldo == 0) p.ldo = int64_t(p.num_heads) * kLat;
  DS_GPU_REQUIRE(p.ldq % 8 == 0 && p.ldo % 8 == 0 && aligned16(p.q) && aligned16(p.cache) && aligned16(p.o) &&
                     aligned16(p.workspace),
                 "mla decode: tensors must be 16-byte aligned with strides a multiple of 8");
  if (p.scale == 0.f) p.scale = float(1.0 / std::sqrt(192.0));
  DS_GPU_REQUIRE(p.kv_tile == 0 || p.kv_tile == 32 || p.kv_tile == 64, "mla decode: kv_tile must be 0, 32 or 64");
  if (p.l2_prefetch_tiles < 0) p.l2_prefetch_tiles = p.kv_tile == 32 ? 4 : 2;  // ~150 KB ahead per CTA
  DS_GPU_REQUIRE(p.warps == 0 || p.warps == 8 || p.warps == 16, "mla decode: warps must be 0, 8 or 16");
  const bool w16 = p.warps == 16 && act == DType::BF16;  // (fp32, the exact path: 8 warps)
  DS_GPU_REQUIRE(p.ctas_per_sm == 0 || p.ctas_per_sm == 1 || p.ctas_per_sm == 2, "mla decode: ctas_per_sm must be 0, 1 or 2");
  if (p.wgmma && act == DType::BF16 && mla_decode_wgmma_supported(ctx)) {  // 64-position tiles, one CTA an SM
    if (p0.l2_prefetch_tiles < 0) p.l2_prefetch_tiles = 2;
    if (p.fp8_cache && p.f8_mma && mla_decode_f8_usable(p, ctx)) launch_mla_decode_f8(p, ctx);
    else launch_mla_decode_wgmma(p, ctx);
    return launch_combine<bf16>(p, ctx);
  }
  if (p.ctas_per_sm == 2 && act == DType::BF16) {  // 8 warps, 32-position tiles, one stage (kv_tile, warps ignored)
    if (p0.l2_prefetch_tiles < 0) p.l2_prefetch_tiles = 4;
    return p.fp8_cache ? launch_decode<bf16, 32, 1, true, 8, 2>(p, ctx) : launch_decode<bf16, 32, 1, false, 8, 2>(p, ctx);
  }
  if (p.fp8_cache) {
    if (act == DType::BF16 && p.kv_tile == 32)
      w16 ? launch_decode<bf16, 32, 4, true, 16>(p, ctx) : launch_decode<bf16, 32, 4, true, 8>(p, ctx);
    else if (act == DType::BF16)
      w16 ? launch_decode<bf16, 64, 2, true, 16>(p, ctx) : launch_decode<bf16, 64, 2, true, 8>(p, ctx);
    else
      launch_decode<float, 32, 1, true>(p, ctx);
  } else if (act == DType::BF16 && p.kv_tile == 32) {
    w16 ? launch_decode<bf16, 32, 4, false, 16>(p, ctx) : launch_decode<bf16, 32, 4>(p, ctx);
  } else if (act == DType::BF16) {
    w16 ? launch_decode<bf16, 64, 2, false, 16>(p, ctx) : launch_decode<bf16, 64, 2>(p, ctx);
  } else {
    launch_decode<float, 32, 1>(p, ctx);
  }
}

}  // namespace ds::gpu
