// Warp-specialised absorbed MLA decode (see mla_decode_ws.h, mla_decode.h for the maths and the layout).
//
// Why: the one-group kernel (mla_decode.cu) runs each tile's phases — land, (convert,) scores, softmax,
// P·C — one after another between CTA-wide barriers, so at any moment most of the SM waits on one phase's
// latency (docs/PERF.md: 60% of bandwidth over a bf16 cache at 1M, 26% over an FP8 cache, whose tile
// conversion adds a phase). Here one CTA of 16 warps holds two groups that work on different tiles:
//   group S (warps 0-7): gathers tiles of kTile = 32 cached positions with cp.async (FP8: raw rows into a
//     ring of 3, converted to bf16 once landed; bf16: straight into a ring of 4), computes the scores
//     S[32 heads][32] = Q·Cᵀ (warp: 16 keys x a 144-dim quarter, Q's fragments held in registers for the
//     whole context; the four quarters summed in shared memory), the online softmax, and P (bf16) with
//     the rescale factors alpha into one of two buffers;
//   group O (warps 8-15): O[32][512] = O·diag(alpha) + P·C[:, 64·w .. 64·w + 63] for the tile group S
//     handed over, while group S already scores the next one.
// Hand-over by named barriers (bar.arrive does not wait; bar.sync waits for all 512 threads):
//   kFull[b]  — S arrives when tile i's P, alpha (and, for FP8, the converted tile) are in buffer b = i & 1;
//               O syncs on it before its P·C of tile i;
//   kEmpty[b] — O arrives when it is done with tile i (buffer b and tile i's stage); S syncs on it before
//               it reuses them for tile i + 2 (only for tiles that have a successor two on: every arrive
//               has its sync);
//   kGroupS   — group S alone (256 threads), between its own phases.
// FP8 cache rows (576 e4m3 + the fp32 scale): the scale multiplies the scores and P, as in mla_decode.cu.
#include <cmath>
#include <cstddef>

#include "cuda/cuda_check.h"
#include "cuda/kernels/common.cuh"
#include "cuda/kernels/fp8_codec.cuh"
#include "cuda/kernels/kda_mma.cuh"
#include "cuda/kernels/mla_decode_common.cuh"
#include "cuda/kernels/mla_decode_ws.h"

namespace ds::gpu {
namespace {

using namespace attn;
using namespace mla_dec;

constexpr int kTile = 32;                  // cached positions a tile
constexpr int kGroupThreads = 256;         // 8 warps a group
constexpr int kThreads = 2 * kGroupThreads;
constexpr int kLdC = padded_ld<bf16>(kQk);  // 584
constexpr int kLdS = kTile + 4;
constexpr int kLdP = padded_ld<bf16>(kTile);  // 40
// named barriers (0 is __syncthreads)
constexpr int kGroupS = 1, kFull0 = 2, kEmpty0 = 4;

__device__ __forceinline__ void bar_sync(int id, int n) { asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(n) : "memory"); }
__device__ __forceinline__ void bar_arrive(int id, int n) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(n) : "memory");
}

template <bool F8> struct WsSmem {
  // bf16: the ring of 4 landed tiles (tile i in stage i % 4); FP8: two converted tiles (i & 1).
  static constexpr int kStages = F8 ? 2 : 4;
  static constexpr int kRaw = F8 ? 3 : 1;  // FP8 raw rows in flight (tile i in raw[i % 3])
  bf16 tile[kStages][kTile][kLdC];
  bf16 q[kRows][kLdC];
  alignas(16) float s[4][kRows][kLdS];
  bf16 p[2][kRows][kLdP];
  float alpha[2][kRows];
  float m[kRows], l[kRows];
  float ks[kTile];  // FP8: the current tile's row scales (group S only)
  alignas(16) uint8_t raw[kRaw][F8 ? kTile : 1][F8 ? kF8Row : 16];
};
static_assert(sizeof(WsSmem<false>) <= 232448 && sizeof(WsSmem<true>) <= 232448,
              "warp-specialised decode beyond the 227 KiB of shared memory");

template <bool F8>
__global__ void __launch_bounds__(kThreads, 1) mla_decode_ws_kernel(MlaDecodeParams p) {
  using Mma = MmaBf16;
  using Smem = WsSmem<F8>;
  constexpr int kKSteps = 144 / Mma::kK;  // 9 k-steps of a dim quarter
  constexpr int kRowUnits = F8 ? kF8Row : kQk;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  pdl_trigger();
  pdl_wait();
  auto& sm = *reinterpret_cast<Smem*>(smem_raw);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int sp = blockIdx.x, r = blockIdx.y, H = p.num_heads;
  const int ctx = p.context_lens[r];
  const int tiles = (ctx + kTile - 1) / kTile;
  const int per = (tiles + p.num_splits - 1) / p.num_splits;
  const int tile0 = sp * per, tile1 = min(tiles, tile0 + per);
  const int n = max(0, tile1 - tile0);  // tiles of this split
  const float scale_log2 = p.scale * kLog2e;
  constexpr int kNO = 8;  // group O: 64 output columns a warp = 8 n8 tiles
  float o[2][kNO][4] = {};

  if (warp < 8) {
    // ======================= group S: loads, scores, softmax =======================
    const int32_t* bt = p.block_tables + int64_t(r) * p.max_blocks;
    const bf16* cache = static_cast<const bf16*>(p.cache);
    const uint8_t* cache8 = static_cast<const uint8_t*>(p.cache);
    constexpr int kThrPerRow = kGroupThreads / kTile;  // 8 threads gather a row
    const int grow = tid / kThrPerRow, gsub = tid % kThrPerRow;
    auto row_offset = [&](int i) -> int64_t {  // offset (row units) of row grow of relative tile i, -1 past the end
      const int pos = (tile0 + i) * kTile + grow;
      if (i >= n || pos >= ctx) return -1;
      return (int64_t(bt[pos / p.block_size]) * p.block_size + pos % p.block_size) * kRowUnits;
    };
    auto issue = [&](int i, int64_t off) {  // relative tile i (row grow at off) into its stage; one commit group
      if (i < n) {
        if constexpr (F8) {
          uint8_t* dst = &sm.raw[i % Smem::kRaw][grow][0];
          for (int c = gsub; c < kF8Row / 16; c += kThrPerRow)
            cp_async16(dst + c * 16, off >= 0 ? cache8 + off + c * 16 : cache8, off >= 0);
        } else {
          bf16* dst = &sm.tile[i % Smem::kStages][grow][0];
          for (int c = gsub; c < kQk / 8; c += kThrPerRow)
            cp_async16(dst + c * 8, off >= 0 ? cache + off + c * 8 : cache, off >= 0);
        }
      }
      cp_async_commit();
    };
    // L2 prefetch of relative tile i: thread j < kTile requests the j-th page part the tile touches. Its
    // block-table entry is looked up an iteration ahead (pf_entry), like the rows' offsets (next_off), so
    // the lookup's latency is not in the way.
    const int pf = p.l2_prefetch_tiles;
    auto pf_entry = [&](int i) -> PagePart {
      if (pf <= 0 || tid >= kTile || i >= n) return PagePart{-1, 0};
      return tile_page_part(bt, p.block_size, (tile0 + i) * kTile, kTile, ctx, tid, kRowUnits,
                            F8 ? uint32_t(kF8Row) : uint32_t(kQk * 2));
    };
    auto pf_issue = [&](const PagePart& e) {
      if (e.off < 0) return;
      if constexpr (F8) prefetch_l2_bulk(cache8 + e.off, e.bytes);
      else prefetch_l2_bulk(cache + e.off, e.bytes);
    };

    // Q (heads >= H zero), then the first tiles; the running statistics
    load_tile_async(&sm.q[0][0], kLdC, static_cast<const bf16*>(p.q) + int64_t(r) * p.ldq, kQk, kRows, kQk, H, tid,
                    kGroupThreads);
    cp_async_commit();
    constexpr int kAhead = F8 ? 3 : 2;  // tiles in flight ahead of the one computed on
#pragma unroll
    for (int i = 0; i < kAhead; ++i) issue(i, row_offset(i));
    for (int d = 0; d < pf; ++d) pf_issue(pf_entry(kAhead + d));
    int64_t next_off = row_offset(kAhead);      // the next tile to issue: kAhead, then one more an iteration
    PagePart next_pf = pf_entry(kAhead + max(pf, 0));  // the next tile to prefetch
    if (tid < kRows) {
      sm.m[tid] = -INFINITY;
      sm.l[tid] = 0.f;
    }
    cp_async_wait<kAhead>();  // Q has landed
    bar_sync(kGroupS, kGroupThreads);
    const int nh = warp & 1, kq = warp >> 1;  // key group of 16 positions, dim quarter of 144
    Mma::A qa[kKSteps][2];
#pragma unroll
    for (int ks = 0; ks < kKSteps; ++ks)
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) qa[ks][mt] = Mma::load_a(&sm.q[16 * mt][144 * kq + ks * Mma::kK], kLdC, lane);

    for (int i = 0; i < n; ++i) {
      const int b = i & 1;
      if (i >= 2) bar_sync(kEmpty0 + b, kThreads);  // group O is done with tile i - 2: buffer b, its stage
      if constexpr (!F8) {                            // tile i + 2 into tile i - 2's stage
        issue(i + 2, next_off);
        next_off = row_offset(i + 3);
      }
      cp_async_wait<2>();                             // tile i has landed (this thread's part)
      bar_sync(kGroupS, kGroupThreads);               // ... everyone's
      if (pf > 0) {
        pf_issue(next_pf);
        next_pf = pf_entry(i + 1 + kAhead + pf);
      }
      if constexpr (F8) {  // raw rows -> bf16 tile b (exact) and the rows' scales
        const uint8_t(*raw)[kF8Row] = sm.raw[i % Smem::kRaw];
        for (int e = tid; e < kTile * (kQk / 16); e += kGroupThreads) {
          const int j = e / (kQk / 16), c = (e % (kQk / 16)) * 16;
          float f[16];
          from_e4m3x16(*reinterpret_cast<const uint4*>(&raw[j][c]), f);
          uint4 lo, hi;
          lo.x = pack_bf16(f[0], f[1]);
          lo.y = pack_bf16(f[2], f[3]);
          lo.z = pack_bf16(f[4], f[5]);
          lo.w = pack_bf16(f[6], f[7]);
          hi.x = pack_bf16(f[8], f[9]);
          hi.y = pack_bf16(f[10], f[11]);
          hi.z = pack_bf16(f[12], f[13]);
          hi.w = pack_bf16(f[14], f[15]);
          *reinterpret_cast<uint4*>(&sm.tile[b][j][c]) = lo;
          *reinterpret_cast<uint4*>(&sm.tile[b][j][c + 8]) = hi;
        }
        if (tid < kTile) sm.ks[tid] = *reinterpret_cast<const float*>(&raw[tid][kQk]);
        bar_sync(kGroupS, kGroupThreads);  // the tile is converted; raw[i % 3] is free
        issue(i + 3, next_off);
        next_off = row_offset(i + 4);
      }
      const bf16(*tl)[kLdC] = sm.tile[F8 ? b : i % Smem::kStages];

      // ---- partial scores: 32 heads x this warp's 16 keys over its 144 dims
      float acc[2][2][4] = {};
#pragma unroll
      for (int ks = 0; ks < kKSteps; ++ks) {
        const int d0 = 144 * kq + ks * Mma::kK;
#pragma unroll
        for (int nt = 0; nt < 2; ++nt) {
          const Mma::B bf = Mma::load_b(&tl[16 * nh + 8 * nt][d0], kLdC, lane);
          Mma::mma(acc[0][nt], qa[ks][0], bf);
          Mma::mma(acc[1][nt], qa[ks][1], bf);
        }
      }
      store_partial_scores(sm.s[kq], acc, 16 * nh, lane);
      bar_sync(kGroupS, kGroupThreads);

      // ---- online softmax: 8 threads a head, 4 keys each
      online_softmax_tile<bf16, F8, kTile, kGroupThreads / kRows>(sm.s, sm.ks, (tile0 + i) * kTile, ctx, scale_log2,
                                                                   tid, sm.p[b], sm.alpha[b], sm.m, sm.l);
      bar_arrive(kFull0 + b, kThreads);  // tile i's P, alpha (and tile) are ready for group O
    }
    cp_async_wait<0>();
  } else {
    // ======================= group O: O = O·diag(alpha) + P·C =======================
    const int wo = warp - 8;
    for (int i = 0; i < n; ++i) {
      const int b = i & 1;
      bar_sync(kFull0 + b, kThreads);
      const bf16(*tl)[kLdC] = sm.tile[F8 ? b : i % Smem::kStages];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float a = sm.alpha[b][16 * mt + c_row(e, lane)];
#pragma unroll
          for (int nt = 0; nt < kNO; ++nt) o[mt][nt][e] *= a;
        }
#pragma unroll
      for (int j0 = 0; j0 < kTile; j0 += Mma::kK) {
        const Mma::A a0 = Mma::load_a(&sm.p[b][0][j0], kLdP, lane);
        const Mma::A a1 = Mma::load_a(&sm.p[b][16][j0], kLdP, lane);
#pragma unroll
        for (int nt = 0; nt < kNO; ++nt) {
          const Mma::B bf = Mma::load_b_km(&tl[j0][64 * wo + 8 * nt], kLdC, lane);
          Mma::mma(o[0][nt], a0, bf);
          Mma::mma(o[1][nt], a1, bf);
        }
      }
      if (i + 2 < n) bar_arrive(kEmpty0 + b, kThreads);  // (group S syncs on it before tile i + 2)
    }
  }
  __syncthreads();  // group S's last statistics are in; write: final output (one split) or the partials
  if (warp >= 8) write_decode_output<bf16>(p, o, sm.l, 64 * (warp - 8), r, sp, lane);
  else if (tid < kRows) write_decode_lse(p, sm.m, sm.l, r, sp, tid);  // the log2-sum-exps of the partials
}

}  // namespace

void launch_mla_decode_ws(const MlaDecodeParams& p, const DeviceContext& ctx) {
  if (p.fp8_cache)
    launch_pdl(mla_decode_ws_kernel<true>, dim3(p.num_splits, p.rows), kThreads, sizeof(WsSmem<true>), ctx, p);
  else
    launch_pdl(mla_decode_ws_kernel<false>, dim3(p.num_splits, p.rows), kThreads, sizeof(WsSmem<false>), ctx, p);
  DS_CUDA_CHECK_LAUNCH();
}

void configure_mla_decode_ws() {
  set_max_dynamic_smem(mla_decode_ws_kernel<false>, sizeof(WsSmem<false>));
  set_max_dynamic_smem(mla_decode_ws_kernel<true>, sizeof(WsSmem<true>));
}

}  // namespace ds::gpu
