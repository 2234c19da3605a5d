// Hopper absorbed MLA decode (see mla_decode_wgmma.h; mla_decode.h for the maths and the cache layout).
//
// Why: the mma.sync kernels (mla_decode.cu) run at ~155 TFLOP/s over a long context (1M positions: 0.47 ms a
// layer, 60% of the bf16 cache's bandwidth; slower over the FP8 cache, whose conversion adds to the same
// warps' work), so the attention is bound by the warps' issue, not the bytes. Here the tensor cores read both
// operands from shared memory asynchronously (wgmma), and the products are transposed so that the heads are
// the instruction's N and nothing is padded:
//   Sᵀ[64 positions][16 heads] = C · Qᵀ           (m64n16k16, A = the tile K-major, B = Q K-major; 36 k-steps)
//   Oᵀ[512 dims][16 heads]    += Cᵀ · Pᵀ          (m64n16k16 a 64-dim block and 16 positions, A = the same tile
//                                                   read MN-major, B = Pᵀ [16 heads][64 positions] K-major)
// CTA = one (split, row), 384 threads in three warpgroups, one CTA an SM:
//   consumers (warpgroups 0 and 1): consumer c owns heads 16c .. 16c + 15 over every tile — its own scores
//     (all 36 k-steps), online softmax (the per-head tile maximum over its 4 warps through shared memory and
//     a 128-thread named barrier), Pᵀ rows and 512-dim output (64 fp32 a thread), so the two never wait on
//     each other's results, only on the stage both read (released when both are done with it).
//   producer (warpgroup 2): per tile, the 64 cache rows are looked up once; bf16: 16-byte cp.async copies
//     into the stage in wgmma.cuh's 128-byte-swizzled layout (atom a = dims 64a .. 64a + 63 at a · 8 KiB,
//     position j its row j), completing on the stage's `full` mbarrier (cp.async.mbarrier.arrive; the
//     consumers fence the async proxy after their wait); FP8: the raw rows (576 e4m3 + the fp32 scale)
//     through registers (the whole tile in flight), converted exactly to f16 (one cvt a pair) into the
//     stage. L2 bulk prefetches run l2_prefetch_tiles tiles ahead.
// Registers: a 384-thread CTA gives each thread at most 168 (ptxas; an SM sub-partition holds 3 of its 12
// warps), and a consumer holding all 32 heads' output (128 fp32) with its scores does not fit; session 17's
// first form (two consumers on alternate tiles, 288 threads at 224 registers) failed to launch for that
// reason. Splitting by heads costs shared-memory reads (each consumer reads the whole tile as A).
// FP8 cache numerics: the products run in f16 (e4m3 -> f16 is exact; Q is scaled per head by a power of
// two so that its largest value lies in [2^14, 2^15), exact and far from f16's limit; the scores are
// divided by it again). The row scales multiply the scores and, through Pᵀ, the output; so that Pᵀ stays
// in f16's normal range the output is kept in units of 2^E, 2^E above every row scale of the tiles so far
// (E = the frexp exponent of the largest; rescaling by powers of two is exact), and P·scale·2^-E < 1 is what
// Pᵀ holds.
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
constexpr int kPBytes = kRows * 128;      // Pᵀ: 32 heads x 64 positions, 16-bit (rows 16c.. consumer c's)
constexpr int kKSteps = kQk / 16;         // 36 k-steps of the scores
constexpr int kThreads = 384;             // consumers 0 .. 255, the producer 256 .. 383
constexpr int kF8Loads = kT * (kQk / 16) / 128;  // FP8: 16-byte raw chunks of a tile a producer thread (18)

constexpr int kOffQ = 2 * kStageBytes;
constexpr int kOffP = kOffQ + kAtoms * kQAtom;
constexpr int kOffMisc = kOffP + kPBytes;

struct Misc {
  float red[2][4][16];        // [consumer][warp][head - 16c]: the tile's column maxima, the final sums
  float ks[2][kT];            // FP8: the row scales of stage s
  int ke[2];                  // FP8: the frexp exponent of stage s's largest row scale (2^ke above all)
  float qsc[kRows];           // FP8: the per-head power-of-two scale of Q
  int64_t rows[2][kT];        // the producer's cache rows of tile i's positions (i % 2; -1 past the context)
  uint64_t full[2], empty[2];
};
constexpr size_t kSmem = size_t(kOffMisc) + sizeof(Misc) + 1024;
static_assert(kSmem <= 232448, "beyond 227 KiB of shared memory");

// named barriers: 1 + c consumer c alone, 3 the producer
constexpr int kBarConsumer0 = 1, kBarProducer = 3;

__device__ __forceinline__ uint4 ld_nc16(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// The exponent e of the warp's largest value v (v >= 0 in every lane): max in [2^(e-1), 2^e), so 2^e is above
// every lane's v; 0 when the max is 0 or not finite.
__device__ __forceinline__ int warp_max_exponent(float v) {
#pragma unroll
  for (int sh = 1; sh < 32; sh <<= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, sh));
  int e = 0;
  if (v > 0.f && isfinite(v)) (void)frexpf(v, &e);
  return e;
}

struct Split {  // this CTA's share of its row: tiles tile0 .. tile0 + n - 1
  int r, sp, ctx, tile0, n;
  const int32_t* bt;
};

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

template <bool F8, int kChains>
__device__ void consume(const MlaDecodeParams& p, const Split& s, unsigned char* smem, uint32_t sbase, Misc& mi,
                        int c, int wt) {
  const int lane = wt & 31, wq = wt >> 5;
  const int bar = kBarConsumer0 + c;
  const uint32_t qs = sbase + kOffQ + c * 16 * 128, ps = sbase + kOffP + c * 16 * 128;
  unsigned char* pbuf = smem + kOffP + c * 16 * 128;  // this consumer's 16 rows of Pᵀ
  const int ra = 16 * wq + (lane >> 2), rb = ra + 8;  // the thread's two positions of a tile
  float qf[4];  // the scores' factor per head: log2(e) · scale (/ Q's power-of-two scale with the FP8 cache)
#pragma unroll
  for (int q = 0; q < 4; ++q) qf[q] = p.scale * kLog2e / (F8 ? mi.qsc[16 * c + hcol_of(q, lane)] : 1.f);
  float o[8][8];
#pragma unroll
  for (int b = 0; b < 8; ++b)
#pragma unroll
    for (int e = 0; e < 8; ++e) o[b][e] = 0.f;
  float mh[4], lp[4];
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    mh[q] = -INFINITY;
    lp[q] = 0.f;
  }
  int erun = -1000;  // FP8: the output's exponent (see the top of the file); set by the first tile
  for (int i = 0; i < s.n; ++i) {
    const int st = i & 1;
    const uint32_t stage = sbase + st * kStageBytes;
    mbar_wait(&mi.full[st], uint32_t(i >> 1) & 1u);
    if constexpr (!F8) fence_proxy_async();  // the producer's cp.async writes, for the wgmma below
    // ---- Sᵀ = C·Qᵀ over this consumer's heads, in kChains independent accumulators (k-step ks into chain
    // ks % kChains), summed after: one m64n16k16 is ~8 cycles of tensor work, so a single chain of 36
    // dependent ones would wait on each other's latency
    float acc[kChains][8];
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < kKSteps; ++ks)
      wgmma_m64n16k16<0, F8>(acc[ks % kChains], desc_k_sw128(stage + (ks >> 2) * kAtomBytes + (ks & 3) * 32),
                             desc_k_sw128(qs + (ks >> 2) * kQAtom + (ks & 3) * 32), ks >= kChains);
    wgmma_commit();
    wgmma_wait<0>();
    float sc[8];
#pragma unroll
    for (int c2 = 0; c2 < kChains; ++c2) reg_fence(acc[c2]);
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      float x = acc[0][e];
#pragma unroll
      for (int c2 = 1; c2 < kChains; ++c2) x += acc[c2][e];
      sc[e] = x;
    }

    // ---- online softmax over the tile's positions, per head
    const int pos0 = (s.tile0 + i) * kT;
    const float ka = F8 ? mi.ks[st][ra] : 1.f, kb = F8 ? mi.ks[st][rb] : 1.f;
    const bool va = pos0 + ra < s.ctx, vb = pos0 + rb < s.ctx;
    float tmx[4];
#pragma unroll
    for (int q = 0; q < 4; ++q) tmx[q] = -INFINITY;
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const bool lo = (e & 2) == 0;
      const int q = 2 * (e >> 2) + (e & 1);
      const float x = sc[e] * qf[q] * (lo ? ka : kb);
      sc[e] = (lo ? va : vb) ? x : -INFINITY;
      tmx[q] = fmaxf(tmx[q], sc[e]);
    }
#pragma unroll
    for (int q = 0; q < 4; ++q)
#pragma unroll
      for (int sh = 4; sh < 32; sh <<= 1) tmx[q] = fmaxf(tmx[q], __shfl_xor_sync(0xffffffffu, tmx[q], sh));
    float(*red)[16] = mi.red[c];
    if (lane < 4)
#pragma unroll
      for (int q = 0; q < 4; ++q) red[wq][hcol_of(q, lane)] = tmx[q];
    named_sync(bar, 128);
    float alpha[4], lsum[4];
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int hc = hcol_of(q, lane);
      const float t = fmaxf(fmaxf(red[0][hc], red[1][hc]), fmaxf(red[2][hc], red[3][hc]));
      const float m_new = fmaxf(mh[q], t);  // finite: every tile holds a position < ctx
      alpha[q] = fast_exp2(mh[q] - m_new);  // 0 for the first tile (mh = -inf)
      mh[q] = m_new;
      lsum[q] = 0.f;
    }
    float pa = 1.f, pb = 1.f, fe = 1.f;  // FP8: Pᵀ's row factors scale · 2^-E, the output's rescale 2^(E - E')
    if constexpr (F8) {
      const int et = mi.ke[st];
      if (et > erun) {
        fe = ldexpf(1.f, erun - et);
        erun = et;
      }
      pa = ldexpf(ka, -erun);
      pb = ldexpf(kb, -erun);
    }
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const int q = 2 * (e >> 2) + (e & 1);
      const bool lo = (e & 2) == 0;
      const float pv = fast_exp2(sc[e] - mh[q]);
      lsum[q] += pv;
      const int hc = hcol_of(q, lane), pos = lo ? ra : rb;
      unsigned char* dst = pbuf + swz(hc, pos >> 3) + (pos & 7) * 2;
      if constexpr (F8) *reinterpret_cast<__half*>(dst) = __float2half_rn(pv * (lo ? pa : pb));
      else *reinterpret_cast<bf16*>(dst) = __float2bfloat16_rn(pv);
    }
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      lp[q] = lp[q] * alpha[q] + lsum[q];
      alpha[q] *= fe;
    }
#pragma unroll
    for (int b = 0; b < 8; ++b)
#pragma unroll
      for (int e = 0; e < 8; ++e) o[b][e] *= alpha[2 * (e >> 2) + (e & 1)];
    fence_proxy_async();  // Pᵀ, for the wgmma below
    named_sync(bar, 128);  // Pᵀ whole (and the tile maxima read)

    // ---- Oᵀ += Cᵀ·Pᵀ over the 512 latent dims
    wgmma_fence();  // (kChains > 1: consecutive wgmmas on different accumulators, the 8 dim blocks inside)
#pragma unroll
    for (int t = 0; t < 8 * (kT / 16); ++t) {
      const int b = kChains > 1 ? t % 8 : t / (kT / 16), kk = kChains > 1 ? t / 8 : t % (kT / 16);
      wgmma_m64n16k16<1, F8>(o[b], desc_mn_sw128(stage + b * kAtomBytes + kk * 2048, kAtomBytes),
                             desc_k_sw128(ps + kk * 32), 1);
    }
    wgmma_commit();
    wgmma_wait<0>();
#pragma unroll
    for (int b = 0; b < 8; ++b) reg_fence(o[b]);
    mbar_arrive(&mi.empty[st]);
  }

  // ---- the sums per head over the warpgroup; normalise and write this consumer's heads
  float(*red)[16] = mi.red[c];
#pragma unroll
  for (int q = 0; q < 4; ++q)
#pragma unroll
    for (int sh = 4; sh < 32; sh <<= 1) lp[q] += __shfl_xor_sync(0xffffffffu, lp[q], sh);
  if (lane < 4)
#pragma unroll
    for (int q = 0; q < 4; ++q) red[wq][hcol_of(q, lane)] = lp[q];
  named_sync(bar, 128);
  const int H = p.num_heads;
  float f[4];
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    const int hc = hcol_of(q, lane), h = 16 * c + hc;
    const float L = red[0][hc] + red[1][hc] + red[2][hc] + red[3][hc];
    f[q] = L > 0.f ? ldexpf(1.f / L, F8 ? erun : 0) : 0.f;
    if (wq == 0 && lane < 4 && p.num_splits > 1 && h < H)
      decode_split_lse(p, s.r, s.sp, h) = L > 0.f ? mh[q] + log2f(L) : -INFINITY;
  }
  const bool direct = p.num_splits == 1;
#pragma unroll
  for (int b = 0; b < 8; ++b)
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const int q = 2 * (e >> 2) + (e & 1), h = 16 * c + hcol_of(q, lane);
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

template <bool F8, int kChains>
__global__ void __launch_bounds__(kThreads, 1) mla_decode_wgmma_kernel(const __grid_constant__ MlaDecodeParams p) {
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
      mbar_init(&mi.full[st], 128);
      mbar_init(&mi.empty[st], 256);
    }
  }
  load_q<F8>(p, s.r, sbase, smem, mi, tid);
  fence_proxy_async();
  __syncthreads();
  if (tid >= 256) produce<F8>(p, s, smem, sbase, mi, tid - 256);
  else consume<F8, kChains>(p, s, smem, sbase, mi, tid >> 7, tid & 127);
}

}  // namespace

bool mla_decode_wgmma_supported(const DeviceContext& ctx) {
  return ctx.info.sm_major == 9 && size_t(ctx.info.smem_per_block_optin) >= kSmem;
}

void configure_mla_decode_wgmma(const DeviceContext& ctx) {
  if (!mla_decode_wgmma_supported(ctx)) return;
  set_max_dynamic_smem(mla_decode_wgmma_kernel<false, 1>, kSmem);
  set_max_dynamic_smem(mla_decode_wgmma_kernel<true, 1>, kSmem);
  set_max_dynamic_smem(mla_decode_wgmma_kernel<false, 4>, kSmem);
  set_max_dynamic_smem(mla_decode_wgmma_kernel<true, 4>, kSmem);
  set_max_dynamic_smem(mla_decode_wgmma_kernel<false, 6>, kSmem);
  set_max_dynamic_smem(mla_decode_wgmma_kernel<true, 6>, kSmem);
}

void launch_mla_decode_wgmma(const MlaDecodeParams& p, const DeviceContext& ctx) {
  const dim3 grid(unsigned(p.num_splits), unsigned(p.rows));
  auto kernel = p.fp8_cache ? (p.wgmma_chains == 6   ? mla_decode_wgmma_kernel<true, 6>
                               : p.wgmma_chains == 4 ? mla_decode_wgmma_kernel<true, 4>
                                                     : mla_decode_wgmma_kernel<true, 1>)
                            : (p.wgmma_chains == 6   ? mla_decode_wgmma_kernel<false, 6>
                               : p.wgmma_chains == 4 ? mla_decode_wgmma_kernel<false, 4>
                                                     : mla_decode_wgmma_kernel<false, 1>);
  launch_pdl(kernel, grid, kThreads, kSmem, ctx, p);
  DS_CUDA_CHECK_LAUNCH();
}

}  // namespace ds::gpu
