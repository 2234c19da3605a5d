// Hopper absorbed MLA decode (see mla_decode_wgmma.h; mla_decode.h for the maths and the cache layout).
//
// Why: the mma.sync kernels (mla_decode.cu) run at ~155 TFLOP/s over a long context (1M positions: 0.47 ms a
// layer, 60% of the bf16 cache's bandwidth; slower over the FP8 cache, whose conversion adds to the same
// warps' work), so the attention is bound by the warps' issue, not the bytes. Here the tensor cores read both
// operands from shared memory asynchronously (wgmma), and the products are transposed so that the 32 heads
// are the instruction's N and nothing is padded:
//   Sᵀ[64 positions][32 heads] = C · Qᵀ           (m64n32k16, A = the tile K-major, B = Q K-major; 36 k-steps)
//   Oᵀ[512 dims][32 heads]    += Cᵀ · Pᵀ          (m64n32k16 a 64-dim block and 16 positions, A = the same tile
//                                                   read MN-major, B = Pᵀ [32 heads][64 positions] K-major)
// CTA = one (split, row), 288 threads, one CTA an SM (the launch bound leaves 224 registers a thread: a
// consumer holds the whole 512 x 32 fp32 Oᵀ, 128 a thread; ptxas does not raise a kernel's launch-bound cap
// after setmaxnreg, mla_prefill_wgmma.cu found, so the producer is one warp rather than a warpgroup):
//   consumers (warpgroups 0 and 1) take alternate tiles ("ping-pong": consumer c the tiles i = c, c + 2, ...,
//     always in stage c), each with its own online softmax and output, so one consumer's softmax and
//     rescaling run while the other's wgmmas do; per tile: the 36 score k-steps, the per-head tile maximum
//     over the warpgroup's 4 warps (shared memory + a 128-thread named barrier), Pᵀ into the consumer's own
//     buffer, the 32 output wgmmas, then the stage is released. At the end consumer 1 hands (O, m, l) to
//     consumer 0 through shared memory, which merges them (log-sum-exp) and writes the output, or the
//     split's normalised partial and log2-sum-exp for the combine.
//   producer (warp 8): per tile, the 64 cache rows are looked up once; bf16: 16-byte cp.async copies into the
//     stage in wgmma.cuh's 128-byte-swizzled layout (atom a = dims 64a .. 64a + 63 at a · 8 KiB, position j
//     its row j), completing on the stage's `full` mbarrier (cp.async.mbarrier.arrive; the consumers fence
//     the async proxy after their wait); FP8: the raw rows (576 e4m3 + the fp32 scale) through registers,
//     half a tile in flight, converted exactly to f16 (one cvt a pair) into the stage. L2 bulk prefetches
//     run l2_prefetch_tiles tiles ahead.
// FP8 cache numerics: the products run in f16 (e4m3 -> f16 is exact; Q is scaled per head by a power of
// two so that its largest value lies in [2^14, 2^15), exact and far from f16's limit; the scores are
// divided by it again). The row scales multiply the scores and, through Pᵀ, the output; so that Pᵀ stays
// in f16's normal range a consumer keeps its output in units of 2^E, E the largest ceil(log2(row scale))
// of its tiles so far (a power of two, exact), and P·scale·2^-E <= 1 is what Pᵀ holds.
#include <cmath>
#include <cstddef>
#include <cstdint>

#include <cuda_fp16.h>

#include "cuda/cuda_check.h"
#include "cuda/kernels/common.cuh"
#include "cuda/kernels/fp8_codec.cuh"
#include "cuda/kernels/kda_mma.cuh"
#include "cuda/kernels/mla_decode_common.cuh"
#include "cuda/kernels/mla_decode_wgmma.h"
#include "cuda/kernels/wgmma.cuh"

namespace ds::gpu {
namespace {

using namespace mla_dec;
using namespace wg;
using attn::fast_exp2;
using attn::kLog2e;

constexpr int kT = 64;                    // cached positions a tile
constexpr int kAtoms = kQk / 64;          // 9: 8 latent + 1 rope
constexpr int kAtomBytes = kT * 128;      // 8 KiB
constexpr int kStageBytes = kAtoms * kAtomBytes;  // 73,728
constexpr int kQAtom = kRows * 128;       // 4 KiB
constexpr int kPBytes = kRows * 128;      // Pᵀ: 32 heads x 64 positions, 16-bit
constexpr int kKSteps = kQk / 16;         // 36 k-steps of the scores
constexpr int kThreads = 288;             // consumers 0 .. 255, the producer warp 256 .. 287
constexpr int kF8Rounds = kT / 8;                // FP8: a tile's raw rows in rounds of 8 rows, two in flight
constexpr int kF8Round = 8 * (kQk / 16) / 32;    // ... 9 chunks of 16 bytes a producer lane a round

constexpr int kOffQ = 2 * kStageBytes;
constexpr int kOffP = kOffQ + kAtoms * kQAtom;
constexpr int kOffMisc = kOffP + 2 * kPBytes;
constexpr int kXFloats = 128 + 8 + 8;     // the merge: consumer 1's o (128), m (8) and l (8) a thread

struct Misc {
  float red[2][4][kRows];     // [consumer][warp][head]: the tile's column maxima, the final sums
  float ks[2][kT];            // FP8: the row scales of stage s
  int ke[2];                  // FP8: ceil(log2(the largest row scale)) of stage s
  float qsc[kRows];           // FP8: the per-head power-of-two scale of Q
  int e1;                     // FP8: consumer 1's output exponent, for the merge
  int64_t rows[2][kT];        // the producer's cache rows of tile i's positions (i % 2; -1 past the context)
  uint64_t full[2], empty[2];
};
constexpr size_t kSmem = size_t(kOffMisc) + sizeof(Misc) + 1024;
static_assert(kSmem <= 232448, "beyond 227 KiB of shared memory");
static_assert(size_t(kXFloats) * 128 * 4 <= size_t(kStageBytes), "the merge buffer reuses stage 0");

// named barriers: 1 + c consumer c alone, 3 both consumers
constexpr int kBarConsumer0 = 1, kBarBoth = 3;

__device__ __forceinline__ uint4 ld_nc16(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// 16 e4m3 values to 16 f16 (exact), as two 16-byte words.
__device__ __forceinline__ void e4m3x16_to_f16(const uint4& raw, uint4& lo, uint4& hi) {
  const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
  uint32_t b[8];
#pragma unroll
  for (int h = 0; h < 4; ++h) {
    const __half2_raw a = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(w[h] & 0xffffu), __NV_E4M3);
    const __half2_raw c = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(w[h] >> 16), __NV_E4M3);
    b[2 * h] = uint32_t(a.x) | (uint32_t(a.y) << 16);
    b[2 * h + 1] = uint32_t(c.x) | (uint32_t(c.y) << 16);
  }
  lo = make_uint4(b[0], b[1], b[2], b[3]);
  hi = make_uint4(b[4], b[5], b[6], b[7]);
}

struct Split {  // this CTA's share of its row: tiles tile0 .. tile0 + n - 1
  int r, sp, ctx, tile0, n;
  const int32_t* bt;
};

// ---- producer (one warp) --------------------------------------------------------------------------
template <bool F8>
__device__ void produce(const MlaDecodeParams& p, const Split& s, unsigned char* smem, uint32_t sbase, Misc& mi,
                        int lane) {
  const int bs = p.block_size;
  const int pf = p.l2_prefetch_tiles;
  auto prefetch = [&](int i) {  // tile i's page parts into L2 (lane j: the j-th, j + 32-th... page it touches)
    if (pf <= 0 || i >= s.n) return;
    for (int j = lane; j <= kT; j += 32) {
      const PagePart e = tile_page_part(s.bt, bs, (s.tile0 + i) * kT, kT, s.ctx, j, F8 ? kF8Row : kQk,
                                        F8 ? uint32_t(kF8Row) : uint32_t(kQk * 2));
      if (e.off < 0) break;
      if constexpr (F8) prefetch_l2_bulk(static_cast<const uint8_t*>(p.cache) + e.off, e.bytes);
      else prefetch_l2_bulk(static_cast<const bf16*>(p.cache) + e.off, e.bytes);
    }
  };
  for (int i = 0; i < pf && i < s.n; ++i) prefetch(i);
  for (int i = 0; i < s.n; ++i) {
    const int st = i & 1;
    const int pos0 = (s.tile0 + i) * kT;
    prefetch(i + pf);
    // the tile's 64 cache rows, once (tile i - 2's, in the same slot, were last read before the __syncwarp of
    // tile i - 1)
    int64_t* rows = mi.rows[st];
#pragma unroll
    for (int j = lane; j < kT; j += 32)
      rows[j] = pos0 + j < s.ctx ? int64_t(s.bt[(pos0 + j) / bs]) * bs + (pos0 + j) % bs : int64_t(-1);
    __syncwarp();
    if constexpr (!F8) {
      const bf16* cache = static_cast<const bf16*>(p.cache);
      if (i >= 2) mbar_wait(&mi.empty[st], uint32_t((i >> 1) - 1) & 1u);
      const uint32_t dst = sbase + st * kStageBytes;
      // lane: chunks lane and lane + 32 of every row (a row's 16-byte chunk ch, dims 8ch .. 8ch + 7), then the
      // rows' last 8 chunks, 4 rows a step (simple per-lane indices: nothing for the compiler to keep live)
      auto copy = [&](int j, int ch) {
        const int64_t row = rows[j];
        const bool ok = row >= 0;
        cp16(dst + (ch >> 3) * kAtomBytes + swz(j, ch & 7), ok ? cache + row * kQk + ch * 8 : cache, ok);
      };
#pragma unroll 4
      for (int j = 0; j < kT; ++j) {
        copy(j, lane);
        copy(j, lane + 32);
      }
#pragma unroll 4
      for (int k = 0; k < kT / 4; ++k) copy(4 * k + (lane >> 3), 64 + (lane & 7));
      mbar_arrive_cp_async(&mi.full[st]);  // when this lane's copies have landed
    } else {
      const uint8_t* cache = static_cast<const uint8_t*>(p.cache);
      // the row scales (lanes: positions lane, lane + 32) and their largest power-of-two ceiling
      float sc0 = 0.f, sc1 = 0.f;
      if (rows[lane] >= 0) sc0 = *reinterpret_cast<const float*>(cache + rows[lane] * kF8Row + kQk);
      if (rows[lane + 32] >= 0) sc1 = *reinterpret_cast<const float*>(cache + rows[lane + 32] * kF8Row + kQk);
      float kmax = fmaxf(fabsf(sc0), fabsf(sc1));
#pragma unroll
      for (int sh = 1; sh < 32; sh <<= 1) kmax = fmaxf(kmax, __shfl_xor_sync(0xffffffffu, kmax, sh));
      int e = 0;
      if (kmax > 0.f && isfinite(kmax)) {
        (void)frexpf(kmax, &e);  // kmax = f · 2^e, f in [0.5, 1): 2^e >= kmax
      }
      unsigned char* stage = smem + st * kStageBytes;
      // round r: rows 8r .. 8r + 7 whole (their 36 chunks of 16 values): lane takes chunk `lane` of each
      // of the 8 rows, and one of their last 4 chunks (row 8r + lane / 4, chunk 32 + lane % 4)
      auto chunk_of = [&](int r, int k, int& j, int& c) {
        if (k < 8) {
          j = 8 * r + k;
          c = lane;
        } else {
          j = 8 * r + (lane >> 2);
          c = 32 + (lane & 3);
        }
      };
      auto load = [&](uint4 (&v)[kF8Round], int r) {
#pragma unroll
        for (int k = 0; k < kF8Round; ++k) {
          int j, c;
          chunk_of(r, k, j, c);
          const int64_t row = rows[j];
          v[k] = row >= 0 ? ld_nc16(cache + row * kF8Row + 16 * c) : make_uint4(0, 0, 0, 0);
        }
      };
      auto store = [&](const uint4 (&v)[kF8Round], int r) {
#pragma unroll
        for (int k = 0; k < kF8Round; ++k) {
          int j, c;
          chunk_of(r, k, j, c);
          uint4 lo, hi;
          e4m3x16_to_f16(v[k], lo, hi);
          unsigned char* atom = stage + (c >> 2) * kAtomBytes;  // dims 16c .. 16c + 15: chunks 2(c % 4), +1
          *reinterpret_cast<uint4*>(atom + swz(j, 2 * (c & 3))) = lo;
          *reinterpret_cast<uint4*>(atom + swz(j, 2 * (c & 3) + 1)) = hi;
        }
      };
      uint4 v[2][kF8Round];  // two rounds in flight
      load(v[0], 0);
      load(v[1], 1);
      if (i >= 2) mbar_wait(&mi.empty[st], uint32_t((i >> 1) - 1) & 1u);
#pragma unroll
      for (int r = 0; r < kF8Rounds; ++r) {
        store(v[r & 1], r);
        if (r + 2 < kF8Rounds) load(v[r & 1], r + 2);
      }
      mi.ks[st][lane] = sc0;
      mi.ks[st][lane + 32] = sc1;
      if (lane == 0) mi.ke[st] = e;
      fence_proxy_async();  // the converted tile, for the consumers' wgmma
      mbar_arrive(&mi.full[st]);
    }
  }
}

// ---- consumers -----------------------------------------------------------------------------------
// Thread wt of a consumer warpgroup (warp wq, lane): accumulator element 4j + k of an m64n32 fragment is
// row 16 wq + lane / 4 + 8 (k / 2), column 8j + 2 (lane % 4) + k % 2; so a thread's columns — the heads of Sᵀ
// and Oᵀ alike — are the same 8 (index q = 2j + k % 2), and its rows are two positions of Sᵀ.
__device__ __forceinline__ int head_of(int q, int lane) { return 8 * (q >> 1) + 2 * (lane & 3) + (q & 1); }

template <bool F8>
__device__ void consume(const MlaDecodeParams& p, const Split& s, unsigned char* smem, uint32_t sbase, Misc& mi,
                        int c, int wt) {
  const int lane = wt & 31, wq = wt >> 5;
  const int bar = kBarConsumer0 + c;
  const uint32_t stage = sbase + c * kStageBytes;  // tile i is in stage i % 2 = c
  const uint32_t qs = sbase + kOffQ, ps = sbase + kOffP + c * kPBytes;
  unsigned char* pbuf = smem + kOffP + c * kPBytes;
  const int ra = 16 * wq + (lane >> 2), rb = ra + 8;  // the thread's two positions of a tile
  float qf[8];  // the scores' factor per head: log2(e) · scale (/ Q's power-of-two scale with the FP8 cache)
#pragma unroll
  for (int q = 0; q < 8; ++q) qf[q] = p.scale * kLog2e / (F8 ? mi.qsc[head_of(q, lane)] : 1.f);
  float o[8][16];
#pragma unroll
  for (int b = 0; b < 8; ++b)
#pragma unroll
    for (int e = 0; e < 16; ++e) o[b][e] = 0.f;
  float mh[8], lp[8];
#pragma unroll
  for (int q = 0; q < 8; ++q) {
    mh[q] = -INFINITY;
    lp[q] = 0.f;
  }
  int erun = -1000;  // FP8: the output's exponent (see the top of the file); set by the first tile
  for (int i = c, k = 0; i < s.n; i += 2, ++k) {
    mbar_wait(&mi.full[c], uint32_t(k) & 1u);
    if constexpr (!F8) fence_proxy_async();  // the producer's cp.async writes, for the wgmma below
    // ---- Sᵀ = C·Qᵀ
    float sc[16];
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < kKSteps; ++ks)
      wgmma_m64n32k16<0, F8>(sc, desc_k_sw128(stage + (ks >> 2) * kAtomBytes + (ks & 3) * 32),
                             desc_k_sw128(qs + (ks >> 2) * kQAtom + (ks & 3) * 32), ks > 0);
    wgmma_commit();
    wgmma_wait<0>();
    reg_fence(sc);

    // ---- online softmax over the tile's positions, per head
    const int pos0 = (s.tile0 + i) * kT;
    const float ka = F8 ? mi.ks[c][ra] : 1.f, kb = F8 ? mi.ks[c][rb] : 1.f;
    const bool va = pos0 + ra < s.ctx, vb = pos0 + rb < s.ctx;
    float tmx[8];
#pragma unroll
    for (int q = 0; q < 8; ++q) tmx[q] = -INFINITY;
#pragma unroll
    for (int e = 0; e < 16; ++e) {
      const bool lo = (e & 2) == 0;
      const int q = 2 * (e >> 2) + (e & 1);
      const float x = sc[e] * qf[q] * (lo ? ka : kb);
      sc[e] = (lo ? va : vb) ? x : -INFINITY;
      tmx[q] = fmaxf(tmx[q], sc[e]);
    }
#pragma unroll
    for (int q = 0; q < 8; ++q)
#pragma unroll
      for (int sh = 4; sh < 32; sh <<= 1) tmx[q] = fmaxf(tmx[q], __shfl_xor_sync(0xffffffffu, tmx[q], sh));
    float(*red)[kRows] = mi.red[c];
    if (lane < 4)
#pragma unroll
      for (int q = 0; q < 8; ++q) red[wq][head_of(q, lane)] = tmx[q];
    named_sync(bar, 128);
    float alpha[8], lsum[8];
#pragma unroll
    for (int q = 0; q < 8; ++q) {
      const int h = head_of(q, lane);
      const float t = fmaxf(fmaxf(red[0][h], red[1][h]), fmaxf(red[2][h], red[3][h]));
      const float m_new = fmaxf(mh[q], t);  // finite: every tile holds a position < ctx
      alpha[q] = fast_exp2(mh[q] - m_new);  // 0 for the first tile (mh = -inf)
      mh[q] = m_new;
      lsum[q] = 0.f;
    }
    float pa = 1.f, pb = 1.f, fe = 1.f;  // FP8: Pᵀ's row factors scale · 2^-E, the output's rescale 2^(E - E')
    if constexpr (F8) {
      const int et = mi.ke[c];
      if (et > erun) {
        fe = ldexpf(1.f, erun - et);
        erun = et;
      }
      pa = ldexpf(ka, -erun);
      pb = ldexpf(kb, -erun);
    }
#pragma unroll
    for (int e = 0; e < 16; ++e) {
      const int q = 2 * (e >> 2) + (e & 1);
      const bool lo = (e & 2) == 0;
      const float pv = fast_exp2(sc[e] - mh[q]);
      lsum[q] += pv;
      const int h = head_of(q, lane), pos = lo ? ra : rb;
      const float w = F8 ? pv * (lo ? pa : pb) : pv;
      if constexpr (F8) *reinterpret_cast<__half*>(pbuf + swz(h, pos >> 3) + (pos & 7) * 2) = __float2half_rn(w);
      else *reinterpret_cast<bf16*>(pbuf + swz(h, pos >> 3) + (pos & 7) * 2) = __float2bfloat16_rn(w);
    }
#pragma unroll
    for (int q = 0; q < 8; ++q) {
      lp[q] = lp[q] * alpha[q] + lsum[q];
      alpha[q] *= fe;
    }
#pragma unroll
    for (int b = 0; b < 8; ++b)
#pragma unroll
      for (int e = 0; e < 16; ++e) o[b][e] *= alpha[2 * (e >> 2) + (e & 1)];
    fence_proxy_async();  // Pᵀ, for the wgmma below
    named_sync(bar, 128);  // Pᵀ whole (and the tile maxima read)

    // ---- Oᵀ += Cᵀ·Pᵀ over the 512 latent dims
    wgmma_fence();
#pragma unroll
    for (int b = 0; b < 8; ++b)
#pragma unroll
      for (int kk = 0; kk < kT / 16; ++kk)
        wgmma_m64n32k16<1, F8>(o[b], desc_mn_sw128(stage + b * kAtomBytes + kk * 2048, kAtomBytes),
                               desc_k_sw128(ps + kk * 32), 1);
    wgmma_commit();
    wgmma_wait<0>();
#pragma unroll
    for (int b = 0; b < 8; ++b) reg_fence(o[b]);
    mbar_arrive(&mi.empty[c]);
  }

  // ---- this consumer's sums per head over the warpgroup
  float(*red)[kRows] = mi.red[c];
#pragma unroll
  for (int q = 0; q < 8; ++q)
#pragma unroll
    for (int sh = 4; sh < 32; sh <<= 1) lp[q] += __shfl_xor_sync(0xffffffffu, lp[q], sh);
  if (lane < 4)
#pragma unroll
    for (int q = 0; q < 8; ++q) red[wq][head_of(q, lane)] = lp[q];
  named_sync(bar, 128);
#pragma unroll
  for (int q = 0; q < 8; ++q) {
    const int h = head_of(q, lane);
    lp[q] = red[0][h] + red[1][h] + red[2][h] + red[3][h];
  }
  // ---- the merge: consumer 1 hands its state to consumer 0 through stage 0 (both consumers are past their
  // last tile, so the producer has nothing left in flight)
  named_sync(kBarBoth, 256);
  float* X = reinterpret_cast<float*>(smem);  // [kXFloats][128]
  if (c == 1) {
#pragma unroll
    for (int b = 0; b < 8; ++b)
#pragma unroll
      for (int e = 0; e < 16; ++e) X[(16 * b + e) * 128 + wt] = o[b][e];
#pragma unroll
    for (int q = 0; q < 8; ++q) {
      X[(128 + q) * 128 + wt] = mh[q];
      X[(136 + q) * 128 + wt] = lp[q];
    }
    if (F8 && wt == 0) mi.e1 = erun;
  }
  named_sync(kBarBoth, 256);
  if (c == 1) return;
  const int e0 = F8 ? erun : 0, e1 = F8 ? mi.e1 : 0;
  float f0[8], f1[8];
  const int H = p.num_heads;
#pragma unroll
  for (int q = 0; q < 8; ++q) {
    const int h = head_of(q, lane);
    const float m1 = X[(128 + q) * 128 + wt], l1 = X[(136 + q) * 128 + wt];
    const float M = fmaxf(mh[q], m1);
    const float w0 = mh[q] == -INFINITY ? 0.f : exp2f(mh[q] - M), w1 = m1 == -INFINITY ? 0.f : exp2f(m1 - M);
    const float L = lp[q] * w0 + l1 * w1;
    const float inv = L > 0.f ? 1.f / L : 0.f;
    f0[q] = ldexpf(w0 * inv, e0);
    f1[q] = ldexpf(w1 * inv, e1);
    if (wq == 0 && lane < 4 && p.num_splits > 1 && h < H)
      decode_split_lse(p, s.r, s.sp, h) = L > 0.f ? M + log2f(L) : -INFINITY;
  }
  const bool direct = p.num_splits == 1;
#pragma unroll
  for (int b = 0; b < 8; ++b)
#pragma unroll
    for (int e = 0; e < 16; ++e) {
      const int q = 2 * (e >> 2) + (e & 1), h = head_of(q, lane);
      if (h >= H) continue;
      const int dim = 64 * b + 16 * wq + (lane >> 2) + 8 * ((e >> 1) & 1);
      const float x = o[b][e] * f0[q] + X[(16 * b + e) * 128 + wt] * f1[q];
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
      uint4 v[3] = {make_uint4(0, 0, 0, 0), make_uint4(0, 0, 0, 0), make_uint4(0, 0, 0, 0)};
      float mx = 0.f;
#pragma unroll
      for (int k = 0; k < 3; ++k) {
        const int ch = lane + 32 * k;
        if (ch < 72 && h < p.num_heads) v[k] = *reinterpret_cast<const uint4*>(q + int64_t(h) * kQk + ch * 8);
        const bf16* x = reinterpret_cast<const bf16*>(&v[k]);
#pragma unroll
        for (int t = 0; t < 8; ++t) mx = fmaxf(mx, fabsf(__bfloat162float(x[t])));
      }
#pragma unroll
      for (int sh = 1; sh < 32; sh <<= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, sh));
      int e = 0;
      if (mx > 0.f && isfinite(mx)) (void)frexpf(mx, &e);  // mx in [2^(e-1), 2^e)
      const float scale = ldexpf(1.f, 15 - e);            // mx · scale in [2^14, 2^15)
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

template <bool F8>
__global__ void __maxnreg__(224) mla_decode_wgmma_kernel(const __grid_constant__ MlaDecodeParams p) {
  pdl_trigger();
  pdl_wait();
  extern __shared__ unsigned char smem_raw[];
  unsigned char* smem = align_1024(smem_raw);
  const uint32_t sbase = smem_u32(smem);
  Misc& mi = *reinterpret_cast<Misc*>(smem + kOffMisc);
  const int tid = threadIdx.x;
  Split s;
  s.sp = blockIdx.x;
  s.r = blockIdx.y;
  s.ctx = p.context_lens[s.r];
  s.bt = p.block_tables + int64_t(s.r) * p.max_blocks;
  const int tiles = (s.ctx + kT - 1) / kT, per = (tiles + p.num_splits - 1) / p.num_splits;
  s.tile0 = s.sp * per;
  s.n = max(0, min(tiles, s.tile0 + per) - s.tile0);
  if (tid == 0) {
    for (int st = 0; st < 2; ++st) {
      mbar_init(&mi.full[st], 32);
      mbar_init(&mi.empty[st], 128);
    }
  }
  load_q<F8>(p, s.r, sbase, smem, mi, tid);
  fence_proxy_async();
  __syncthreads();
  if (tid >= 256) produce<F8>(p, s, smem, sbase, mi, tid - 256);
  else consume<F8>(p, s, smem, sbase, mi, tid >> 7, tid & 127);
}

}  // namespace

bool mla_decode_wgmma_supported(const DeviceContext& ctx) {
  return ctx.info.sm_major == 9 && size_t(ctx.info.smem_per_block_optin) >= kSmem;
}

void configure_mla_decode_wgmma(const DeviceContext& ctx) {
  if (!mla_decode_wgmma_supported(ctx)) return;
  set_max_dynamic_smem(mla_decode_wgmma_kernel<false>, kSmem);
  set_max_dynamic_smem(mla_decode_wgmma_kernel<true>, kSmem);
}

void launch_mla_decode_wgmma(const MlaDecodeParams& p, const DeviceContext& ctx) {
  const dim3 grid(unsigned(p.num_splits), unsigned(p.rows));
  if (p.fp8_cache) launch_pdl(mla_decode_wgmma_kernel<true>, grid, kThreads, kSmem, ctx, p);
  else launch_pdl(mla_decode_wgmma_kernel<false>, grid, kThreads, kSmem, ctx, p);
  DS_CUDA_CHECK_LAUNCH();
}

}  // namespace ds::gpu
