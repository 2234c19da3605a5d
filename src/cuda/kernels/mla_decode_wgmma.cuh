// Internal to the Hopper MLA decode (mla_decode_wgmma.cu): its shared-memory layout, the producer warpgroup
// (the tiles of 64 cached positions gathered, FP8 converted to f16), Q's load, and a consumer's output write,
// shared by its two consumer forms (two warpgroups of 16 heads each; the pipelined scores / output pair).
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>

#include <cuda_fp16.h>

#include "cuda/kernels/common.cuh"
#include "cuda/kernels/fp8_codec.cuh"
#include "cuda/kernels/kda_mma.cuh"
#include "cuda/kernels/mla_decode.h"
#include "cuda/kernels/mla_decode_common.cuh"
#include "cuda/kernels/wgmma.cuh"

namespace ds::gpu::mla_wg {

using namespace mla_dec;
using namespace wg;

constexpr int kT = 64;                    // cached positions a tile
constexpr int kAtoms = kQk / 64;          // 9: 8 latent + 1 rope
constexpr int kAtomBytes = kT * 128;      // 8 KiB
constexpr int kStageBytes = kAtoms * kAtomBytes;  // 73,728
constexpr int kQAtom = kRows * 128;       // 4 KiB
constexpr int kPBytes = kRows * 128;      // Pᵀ: 32 heads x 64 positions, 16-bit (rows 16c.. consumer c's)
constexpr int kKSteps = kQk / 16;         // 36 k-steps of the scores
constexpr int kThreads = 384;             // consumers 0 .. 255, the producer 256 .. 383
constexpr int kF8Loads = kT * (kQk / 16) / 128;  // FP8: 16-byte raw chunks of a tile a producer thread (18)

constexpr int kOffQ = 2 * kStageBytes;
constexpr int kOffP = kOffQ + kAtoms * kQAtom;
constexpr int kOffMisc = kOffP + 2 * kPBytes;  // (two Pᵀ buffers: the pipelined form's handoff)

struct Misc {
  float red[2][4][16];        // [consumer][warp][head - 16c]: the tile's column maxima, the final sums
  float ks[2][kT];            // FP8: the row scales of stage s
  int ke[2];                  // FP8: the frexp exponent of stage s's largest row scale (2^ke above all)
  float qsc[kRows];           // FP8: the per-head power-of-two scale of Q
  int64_t rows[2][kT];        // the producer's cache rows of tile i's positions (i % 2; -1 past the context)
  uint64_t full[2], empty[2];
  // the pipelined form (MlaDecodeParams::wgmma_pipe): per Pᵀ buffer b (tile i: b = i % 2) the heads' output
  // rescale factors, the tile maxima by warp (and the final sums), the final sums, maxima and exponent
  float alpha[2][kRows];
  float red32[2][4][kRows];
  float fin_l[kRows], fin_m[kRows];
  int fin_e;
  uint64_t pfull[2], pempty[2];
};
constexpr size_t kSmem = size_t(kOffMisc) + sizeof(Misc) + 1024;
static_assert(kSmem <= 232448, "beyond 227 KiB of shared memory");

// named barriers: 1 + c consumer c alone, 3 the producer, 4 the pipelined form's two consumers at the end
constexpr int kBarConsumer0 = 1, kBarProducer = 3, kBarPipeDone = 4;

__device__ __forceinline__ uint4 ld_nc16(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// ---- producer (one warpgroup) -----------------------------------------------------------------------
template <bool F8>
__device__ void produce(const MlaDecodeParams& p, const Split& s, unsigned char* smem, uint32_t sbase, Misc& mi,
                        int wt) {
  const int bs = p.block_size;
  const int pf = p.l2_prefetch_tiles;
  auto prefetch = [&](int i) {  // tile i's page parts into L2 (thread wt: the wt-th page it touches)
    if (pf <= 0 || i >= s.n || wt > kT) return;
    const PagePart e = tile_page_part(s.bt, bs, (s.tile0 + i) * kT, kT, s.ctx, wt, F8 ? kF8Row : kQk,
                                      F8 ? uint32_t(kF8Row) : uint32_t(kQk * 2));
    if (e.off < 0) return;
    if constexpr (F8) prefetch_l2_bulk(static_cast<const uint8_t*>(p.cache) + e.off, e.bytes);
    else prefetch_l2_bulk(static_cast<const bf16*>(p.cache) + e.off, e.bytes);
  };
  for (int i = 0; i < pf && i < s.n; ++i) prefetch(i);
  for (int i = 0; i < s.n; ++i) {
    const int st = i & 1;
    const int pos0 = (s.tile0 + i) * kT;
    prefetch(i + pf);
    // the tile's 64 cache rows, once (tile i - 2's, in the same slot, were last read before the barrier of
    // tile i - 1)
    int64_t* rows = mi.rows[st];
    if (wt < kT) rows[wt] = pos0 + wt < s.ctx ? int64_t(s.bt[(pos0 + wt) / bs]) * bs + (pos0 + wt) % bs : int64_t(-1);
    named_sync(kBarProducer, 128);
    if constexpr (!F8) {
      const bf16* cache = static_cast<const bf16*>(p.cache);
      if (i >= 2) mbar_wait(&mi.empty[st], uint32_t((i >> 1) - 1) & 1u);
      const uint32_t dst = sbase + st * kStageBytes;
#pragma unroll 4
      for (int k = 0; k < kT * 72 / 128; ++k) {  // 72 chunks of 16 bytes a row
        const int idx = wt + 128 * k, j = idx / 72, ch = idx % 72;
        const int64_t row = rows[j];
        const bool ok = row >= 0;
        cp16(dst + (ch >> 3) * kAtomBytes + swz(j, ch & 7), ok ? cache + row * kQk + ch * 8 : cache, ok);
      }
      mbar_arrive_cp_async(&mi.full[st]);  // when this thread's copies have landed
    } else {
      // the tile's raw rows into registers (thread: chunks idx = wt + 128 k of 16 values, row idx / 36), then
      // (once the stage is free) converted into it; positions past the end read as zeros
      const uint8_t* cache = static_cast<const uint8_t*>(p.cache);
      uint4 v[kF8Loads];
#pragma unroll
      for (int k = 0; k < kF8Loads; ++k) {
        const int idx = wt + 128 * k, j = idx / 36, c = idx % 36;
        const int64_t row = rows[j];
        v[k] = row >= 0 ? ld_nc16(cache + row * kF8Row + 16 * c) : make_uint4(0, 0, 0, 0);
      }
      float scale = 0.f;
      if (wt < kT && rows[wt] >= 0) scale = *reinterpret_cast<const float*>(cache + rows[wt] * kF8Row + kQk);
      if (i >= 2) mbar_wait(&mi.empty[st], uint32_t((i >> 1) - 1) & 1u);
      unsigned char* stage = smem + st * kStageBytes;
#pragma unroll
      for (int k = 0; k < kF8Loads; ++k) {
        const int idx = wt + 128 * k, j = idx / 36, c = idx % 36;
        uint4 lo, hi;
        e4m3x16_to_f16(v[k], lo, hi);
        unsigned char* atom = stage + (c >> 2) * kAtomBytes;  // dims 16c .. 16c + 15: chunks 2(c % 4), +1
        *reinterpret_cast<uint4*>(atom + swz(j, 2 * (c & 3))) = lo;
        *reinterpret_cast<uint4*>(atom + swz(j, 2 * (c & 3) + 1)) = hi;
      }
      if (wt < kT) mi.ks[st][wt] = scale;
      fence_proxy_async();  // the converted tile, for the consumers' wgmma
      named_sync(kBarProducer, 128);  // (the scales written, for the exponent below)
      if (wt < 32) {  // the tile's exponent: 2^E >= every row scale (E = 0 when all are zero)
        const int e = warp_max_exponent(fmaxf(mi.ks[st][wt], mi.ks[st][wt + 32]));
        if (wt == 0) mi.ke[st] = e;
        __syncwarp();
      }
      mbar_arrive(&mi.full[st]);
    }
  }
}

// ---- consumers -----------------------------------------------------------------------------------
// Thread wt of a consumer warpgroup (warp wq, lane): accumulator element 4j + k of an m64n16 fragment is
// row 16 wq + lane / 4 + 8 (k / 2), column 8j + 2 (lane % 4) + k % 2; so a thread's columns — the heads of Sᵀ
// and Oᵀ alike — are the same 4 (index q = 2j + k % 2; head 16c + hc), and its rows are two positions of Sᵀ.
__device__ __forceinline__ int hcol_of(int q, int lane) { return 8 * (q >> 1) + 2 * (lane & 3) + (q & 1); }

// A consumer's normalised output: o[b][e] is dim 64 b + 16 wq + lane / 4 + 8 ((e >> 1) & 1) of head
// h0 + hcol_of(q, lane), q = 2 (e >> 2) + e % 2 < NQ; L and m the head's sum and maximum (log2 units), the
// output in units of 2^E (FP8; 0 for bf16). The split's log-sum-exp too when there are splits.
template <int NQ>
__device__ void write_output(const MlaDecodeParams& p, const Split& s, const float (&o)[8][2 * NQ], const float (&L)[NQ],
                             const float (&m)[NQ], int E, int h0, int lane, int wq) {
  const int H = p.num_heads;
  float f[NQ];
#pragma unroll
  for (int q = 0; q < NQ; ++q) {
    const int h = h0 + hcol_of(q, lane);
    f[q] = L[q] > 0.f ? ldexpf(1.f / L[q], E) : 0.f;
    if (wq == 0 && lane < 4 && p.num_splits > 1 && h < H)
      decode_split_lse(p, s.r, s.sp, h) = L[q] > 0.f ? m[q] + log2f(L[q]) : -INFINITY;
  }
  const bool direct = p.num_splits == 1;
#pragma unroll
  for (int b = 0; b < 8; ++b)
#pragma unroll
    for (int e = 0; e < 2 * NQ; ++e) {
      const int q = 2 * (e >> 2) + (e & 1), h = h0 + hcol_of(q, lane);
      if (h >= H) continue;
      const int dim = 64 * b + 16 * wq + (lane >> 2) + 8 * ((e >> 1) & 1);
      const float x = o[b][e] * f[q];
      if (direct)
        static_cast<bf16*>(p.o)[int64_t(s.r) * p.ldo + int64_t(h) * kLat + dim] = __float2bfloat16_rn(x);
      else
        decode_split_partial(p, s.r, s.sp, h)[dim] = x;
    }
}

// Q into its atoms: bf16 by cp.async as it is; for the FP8 cache converted to f16 with a power-of-two scale per
// head (largest value in [2^14, 2^15)), kept in mi.qsc. Heads >= H are zeros.
template <bool F8>
__device__ void load_q(const MlaDecodeParams& p, int r, uint32_t sbase, unsigned char* smem, Misc& mi, int tid) {
  const bf16* q = static_cast<const bf16*>(p.q) + int64_t(r) * p.ldq;
  if constexpr (!F8) {
    for (int idx = tid; idx < kRows * 72; idx += kThreads) {
      const int h = idx / 72, ch = idx % 72;
      const bool ok = h < p.num_heads;
      cp16(sbase + kOffQ + (ch >> 3) * kQAtom + swz(h, ch & 7), ok ? q + int64_t(h) * kQk + ch * 8 : q, ok);
    }
    cp_wait_all();
  } else {
    const int warp = tid >> 5, lane = tid & 31;
    for (int h = warp; h < kRows; h += kThreads / 32) {  // a warp a head: chunks lane, lane + 32, lane + 64 (< 72)
      uint4 v[3];
      const float mx = load_q_head(q, h, p.num_heads, lane, v);
      const float scale = ldexpf(1.f, 15 - warp_max_exponent(mx));  // the head's max · scale in [2^14, 2^15)
#pragma unroll
      for (int k = 0; k < 3; ++k) {
        const int ch = lane + 32 * k;
        if (ch >= 72) continue;
        const bf16* x = reinterpret_cast<const bf16*>(&v[k]);
        uint32_t w[4];
#pragma unroll
        for (int t = 0; t < 4; ++t) {
          const __half2 hh = __floats2half2_rn(__bfloat162float(x[2 * t]) * scale, __bfloat162float(x[2 * t + 1]) * scale);
          w[t] = *reinterpret_cast<const uint32_t*>(&hh);
        }
        *reinterpret_cast<uint4*>(smem + kOffQ + (ch >> 3) * kQAtom + swz(h, ch & 7)) = make_uint4(w[0], w[1], w[2], w[3]);
      }
      if (lane == 0) mi.qsc[h] = scale;
    }
  }
}

}  // namespace ds::gpu::mla_wg
