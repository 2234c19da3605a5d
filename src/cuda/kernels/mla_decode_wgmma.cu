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
// Pipelined form (MlaDecodeParams::wgmma_pipe, written after session 18's device time, unmeasured): the split by
// heads reads every tile twice as A (once per consumer, 16 heads of N each: ~2.5 KB of shared memory an
// instruction), and both consumers run the same phases at once, so the tensor cores wait during the softmax.
// There warpgroup 0 runs the scores and softmax of all 32 heads (m64n32k16: the tile read once) and writes Pᵀ
// and the heads' rescale factors into one of two buffers; warpgroup 1 runs the output of all 32 heads (128 fp32
// a thread, m64n32k16) a tile behind, so tile i + 1's scores and tile i's products overlap. Shared-memory
// reads a tile: ~204 KB of operands against ~340 KB. 168 registers, no spills.
#include <cmath>
#include <cstdint>

#include <cuda_fp16.h>

#include "cuda/cuda_check.h"
#include "cuda/kernels/mla_decode_wgmma.cuh"
#include "cuda/kernels/mla_decode_wgmma.h"

namespace ds::gpu {
namespace {

using namespace mla_dec;
using namespace mla_wg;
using namespace wg;
using attn::fast_exp2;
using attn::kLog2e;

// ---- a consumer warpgroup's steps of one tile, for 4·NQ heads (NQ 4: a consumer's 16 heads in the two-consumer
// form; 8: all 32 in the pipelined form). A thread's element e of an m64n(4 NQ) fragment lies in the column of
// head hcol_of(q_of(e), lane) and, for the scores, the row of its position ra (e & 2 == 0) or rb.
__device__ __forceinline__ int q_of(int e) { return 2 * (e >> 2) + (e & 1); }

template <int NQ, int TransA, bool F8>
__device__ __forceinline__ void wgmma_heads(float (&d)[2 * NQ], uint64_t a, uint64_t b, int scale_d) {
  if constexpr (NQ == 4) wgmma_m64n16k16<TransA, F8>(d, a, b, scale_d);
  else wgmma_m64n32k16<TransA, F8>(d, a, b, scale_d);
}

// Sᵀ = C·Qᵀ of the stage's tile for the heads whose Q rows start at qs (36 dependent k-steps; four or six
// independent accumulators summed after were slower at every shape, session 18), waited for.
template <int NQ, bool F8>
__device__ __forceinline__ void tile_scores(float (&sc)[2 * NQ], uint32_t stage, uint32_t qs) {
  wgmma_fence();
#pragma unroll
  for (int ks = 0; ks < kKSteps; ++ks)
    wgmma_heads<NQ, 0, F8>(sc, desc_k_sw128(stage + (ks >> 2) * kAtomBytes + (ks & 3) * 32),
                           desc_k_sw128(qs + (ks >> 2) * kQAtom + (ks & 3) * 32), ks > 0);
  wgmma_commit();
  wgmma_wait<0>();
  reg_fence(sc);
}

// The scores times the heads' factors qf and the FP8 row scales ka / kb of the thread's two positions, those past
// the context (va / vb false) -inf; tmx: each head's maximum over the warp's 16 positions.
template <int NQ>
__device__ __forceinline__ void scale_and_max(float (&sc)[2 * NQ], const float (&qf)[NQ], float ka, float kb, bool va,
                                              bool vb, float (&tmx)[NQ]) {
#pragma unroll
  for (int q = 0; q < NQ; ++q) tmx[q] = -INFINITY;
#pragma unroll
  for (int e = 0; e < 2 * NQ; ++e) {
    const bool lo = (e & 2) == 0;
    const float x = sc[e] * qf[q_of(e)] * (lo ? ka : kb);
    sc[e] = (lo ? va : vb) ? x : -INFINITY;
    tmx[q_of(e)] = fmaxf(tmx[q_of(e)], sc[e]);
  }
#pragma unroll
  for (int q = 0; q < NQ; ++q)
#pragma unroll
    for (int sh = 4; sh < 32; sh <<= 1) tmx[q] = fmaxf(tmx[q], __shfl_xor_sync(0xffffffffu, tmx[q], sh));
}

// Each head's value v of the warp into red[wq] (lanes 0..3 hold all 4·NQ heads).
template <int NQ>
__device__ __forceinline__ void put_heads(float (*red)[4 * NQ], const float (&v)[NQ], int wq, int lane) {
  if (lane < 4)
#pragma unroll
    for (int q = 0; q < NQ; ++q) red[wq][hcol_of(q, lane)] = v[q];
}

// The tile's maxima of the 4 warps (red) into the running maxima mh; alpha: the factor of the earlier tiles'
// terms; lsum (the tile's sums, which write_pt adds up) cleared.
template <int NQ>
__device__ __forceinline__ void update_max(const float (*red)[4 * NQ], float (&mh)[NQ], float (&alpha)[NQ], float (&lsum)[NQ], int lane) {
#pragma unroll
  for (int q = 0; q < NQ; ++q) {
    lsum[q] = 0.f;
    const int hc = hcol_of(q, lane);
    const float t = fmaxf(fmaxf(red[0][hc], red[1][hc]), fmaxf(red[2][hc], red[3][hc]));
    const float m_new = fmaxf(mh[q], t);  // finite: every tile holds a position < ctx
    alpha[q] = fast_exp2(mh[q] - m_new);  // 0 for the first tile (mh = -inf)
    mh[q] = m_new;
  }
}

// FP8: the output's exponent E follows the tile's et upwards (returns 2^(E - E'), the output's rescale); pa / pb:
// Pᵀ's factors scale · 2^-E of the thread's two positions.
__device__ __forceinline__ float fp8_units(int et, int& erun, float ka, float kb, float& pa, float& pb) {
  float fe = 1.f;
  if (et > erun) {
    fe = ldexpf(1.f, erun - et);
    erun = et;
  }
  pa = ldexpf(ka, -erun);
  pb = ldexpf(kb, -erun);
  return fe;
}

// Pᵀ of the tile into pbuf (16-bit rows = heads, swizzled), each head's sum of it over the thread's positions
// added to lsum.
template <int NQ, bool F8>
__device__ __forceinline__ void write_pt(unsigned char* pbuf, const float (&sc)[2 * NQ], const float (&mh)[NQ],
                                         float pa, float pb, int ra, int rb, int lane, float (&lsum)[NQ]) {
#pragma unroll
  for (int e = 0; e < 2 * NQ; ++e) {
    const int q = q_of(e);
    const bool lo = (e & 2) == 0;
    const float pv = fast_exp2(sc[e] - mh[q]);
    lsum[q] += pv;
    const int pos = lo ? ra : rb;
    unsigned char* dst = pbuf + swz(hcol_of(q, lane), pos >> 3) + (pos & 7) * 2;
    if constexpr (F8) *reinterpret_cast<__half*>(dst) = __float2half_rn(pv * (lo ? pa : pb));
    else *reinterpret_cast<bf16*>(dst) = __float2bfloat16_rn(pv);
  }
}

// Oᵀ *= the heads' factors f, then Oᵀ += Cᵀ·Pᵀ over the 512 latent dims (Pᵀ rows at ps), waited for.
template <int NQ, bool F8>
__device__ __forceinline__ void tile_products(float (&o)[8][2 * NQ], const float (&f)[NQ], uint32_t stage, uint32_t ps) {
#pragma unroll
  for (int b = 0; b < 8; ++b)
#pragma unroll
    for (int e = 0; e < 2 * NQ; ++e) o[b][e] *= f[q_of(e)];
  wgmma_fence();
#pragma unroll
  for (int t = 0; t < 8 * (kT / 16); ++t) {
    const int b = t / (kT / 16), kk = t % (kT / 16);
    wgmma_heads<NQ, 1, F8>(o[b], desc_mn_sw128(stage + b * kAtomBytes + kk * 2048, kAtomBytes),
                           desc_k_sw128(ps + kk * 32), 1);
  }
  wgmma_commit();
  wgmma_wait<0>();
#pragma unroll
  for (int b = 0; b < 8; ++b) reg_fence(o[b]);
}

// Each head's sum over the warp's lanes (its 16 positions), in place.
template <int NQ> __device__ __forceinline__ void warp_head_sums(float (&v)[NQ]) {
#pragma unroll
  for (int q = 0; q < NQ; ++q)
#pragma unroll
    for (int sh = 4; sh < 32; sh <<= 1) v[q] += __shfl_xor_sync(0xffffffffu, v[q], sh);
}

template <bool F8>
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
    float sc[8];
    tile_scores<4, F8>(sc, stage, qs);

    // ---- online softmax over the tile's positions, per head
    const int pos0 = (s.tile0 + i) * kT;
    const float ka = F8 ? mi.ks[st][ra] : 1.f, kb = F8 ? mi.ks[st][rb] : 1.f;
    float tmx[4], alpha[4], lsum[4];
    scale_and_max<4>(sc, qf, ka, kb, pos0 + ra < s.ctx, pos0 + rb < s.ctx, tmx);
    float(*red)[16] = mi.red[c];
    put_heads<4>(red, tmx, wq, lane);
    named_sync(bar, 128);
    update_max<4>(red, mh, alpha, lsum, lane);
    float pa = 1.f, pb = 1.f, fe = 1.f;  // FP8: Pᵀ's row factors scale · 2^-E, the output's rescale 2^(E - E')
    if constexpr (F8) fe = fp8_units(mi.ke[st], erun, ka, kb, pa, pb);
    write_pt<4, F8>(pbuf, sc, mh, pa, pb, ra, rb, lane, lsum);
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      lp[q] = lp[q] * alpha[q] + lsum[q];
      alpha[q] *= fe;
    }
    fence_proxy_async();  // Pᵀ, for the wgmma below
    named_sync(bar, 128);  // Pᵀ whole (and the tile maxima read)
    tile_products<4, F8>(o, alpha, stage, ps);
    mbar_arrive(&mi.empty[st]);
  }

  // ---- the sums per head over the warpgroup; normalise and write this consumer's heads
  float(*red)[16] = mi.red[c];
  warp_head_sums<4>(lp);
  put_heads<4>(red, lp, wq, lane);
  named_sync(bar, 128);
  float L[4];
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    const int hc = hcol_of(q, lane);
    L[q] = red[0][hc] + red[1][hc] + red[2][hc] + red[3][hc];
  }
  write_output<4>(p, s, o, L, mh, F8 ? erun : 0, 16 * c, lane, wq);
}

// ---- the pipelined form (MlaDecodeParams::wgmma_pipe) ---------------------------------------------------
// Warpgroup 0 runs every tile's scores and online softmax for all 32 heads (Sᵀ = C·Qᵀ as m64n32k16: each
// tile read once as A instead of once per 16 heads), warpgroup 1 every tile's output for all 32 heads
// (Oᵀ += Cᵀ·Pᵀ, m64n32k16, 128 fp32 a thread), a tile behind: the scores of tile i + 1 and the products of
// tile i run at once. Pᵀ and the heads' rescale factors pass through two buffers (pfull: written; pempty:
// read); the stage is released when both warpgroups have arrived on its `empty` barrier.
template <bool F8>
__device__ void consume_scores(const MlaDecodeParams& p, const Split& s, unsigned char* smem, uint32_t sbase, Misc& mi,
                               int wt) {
  const int lane = wt & 31, wq = wt >> 5;
  const uint32_t qs = sbase + kOffQ;
  const int ra = 16 * wq + (lane >> 2), rb = ra + 8;
  float qf[8], mh[8], lp[8];
#pragma unroll
  for (int q = 0; q < 8; ++q) {
    qf[q] = p.scale * kLog2e / (F8 ? mi.qsc[hcol_of(q, lane)] : 1.f);
    mh[q] = -INFINITY;
    lp[q] = 0.f;
  }
  int erun = -1000;
  for (int i = 0; i < s.n; ++i) {
    const int st = i & 1, pb = i & 1;
    const uint32_t stage = sbase + st * kStageBytes;
    mbar_wait(&mi.full[st], uint32_t(i >> 1) & 1u);
    if constexpr (!F8) fence_proxy_async();
    float sc[16];
    tile_scores<8, F8>(sc, stage, qs);
    const float ka = F8 ? mi.ks[st][ra] : 1.f, kb = F8 ? mi.ks[st][rb] : 1.f;
    const int et = F8 ? mi.ke[st] : 0;
    mbar_arrive(&mi.empty[st]);  // done with the stage (the output warpgroup arrives after its products)

    const int pos0 = (s.tile0 + i) * kT;
    float tmx[8], alpha[8], lsum[8];
    scale_and_max<8>(sc, qf, ka, kb, pos0 + ra < s.ctx, pos0 + rb < s.ctx, tmx);
    float(*red)[kRows] = mi.red32[pb];  // (buffer pb: its next writes, two tiles on, follow the next barrier)
    put_heads<8>(red, tmx, wq, lane);
    named_sync(kBarConsumer0, 128);
    update_max<8>(red, mh, alpha, lsum, lane);
    float pa = 1.f, pbf = 1.f, fe = 1.f;  // FP8: as in consume()
    if constexpr (F8) fe = fp8_units(et, erun, ka, kb, pa, pbf);
    if (i >= 2) mbar_wait(&mi.pempty[pb], uint32_t((i >> 1) - 1) & 1u);  // the products of tile i - 2 done
    write_pt<8, F8>(smem + kOffP + pb * kPBytes, sc, mh, pa, pbf, ra, rb, lane, lsum);
#pragma unroll
    for (int q = 0; q < 8; ++q) lp[q] = lp[q] * alpha[q] + lsum[q];
    if (wq == 0 && lane < 4)
#pragma unroll
      for (int q = 0; q < 8; ++q) mi.alpha[pb][hcol_of(q, lane)] = alpha[q] * fe;
    fence_proxy_async();  // Pᵀ, for the other warpgroup's wgmma
    mbar_arrive(&mi.pfull[pb]);
  }
  // the heads' sums over the warpgroup, then L, m and E for the output warpgroup
  warp_head_sums<8>(lp);
  float(*red)[kRows] = mi.red32[s.n & 1];
  named_sync(kBarConsumer0, 128);  // (the last tile's reads of this buffer, two tiles back, are done)
  put_heads<8>(red, lp, wq, lane);
  named_sync(kBarConsumer0, 128);
  if (wq == 0 && lane < 4)
#pragma unroll
    for (int q = 0; q < 8; ++q) {
      const int hc = hcol_of(q, lane);
      mi.fin_l[hc] = red[0][hc] + red[1][hc] + red[2][hc] + red[3][hc];
      mi.fin_m[hc] = mh[q];
    }
  if (wt == 0) mi.fin_e = erun;
  named_sync(kBarPipeDone, 256);
}

template <bool F8>
__device__ void consume_output(const MlaDecodeParams& p, const Split& s, uint32_t sbase, Misc& mi, int wt) {
  const int lane = wt & 31, wq = wt >> 5;
  float o[8][16];
#pragma unroll
  for (int b = 0; b < 8; ++b)
#pragma unroll
    for (int e = 0; e < 16; ++e) o[b][e] = 0.f;
  for (int i = 0; i < s.n; ++i) {
    const int st = i & 1, pb = i & 1;
    const uint32_t stage = sbase + st * kStageBytes, ps = sbase + kOffP + pb * kPBytes;
    mbar_wait(&mi.full[st], uint32_t(i >> 1) & 1u);
    mbar_wait(&mi.pfull[pb], uint32_t(i >> 1) & 1u);
    fence_proxy_async();
    float al[8];
#pragma unroll
    for (int q = 0; q < 8; ++q) al[q] = mi.alpha[pb][hcol_of(q, lane)];
    tile_products<8, F8>(o, al, stage, ps);
    mbar_arrive(&mi.empty[st]);
    mbar_arrive(&mi.pempty[pb]);
  }
  named_sync(kBarPipeDone, 256);  // L, m, E of every head
  float L[8], m[8];
#pragma unroll
  for (int q = 0; q < 8; ++q) {
    L[q] = mi.fin_l[hcol_of(q, lane)];
    m[q] = mi.fin_m[hcol_of(q, lane)];
  }
  write_output<8>(p, s, o, L, m, F8 ? mi.fin_e : 0, 0, lane, wq);
}

template <bool F8, bool kPipe>
__global__ void __launch_bounds__(kThreads, 1) mla_decode_wgmma_kernel(const __grid_constant__ MlaDecodeParams p) {
  pdl_trigger();
  pdl_wait();
  extern __shared__ unsigned char smem_raw[];
  unsigned char* smem = align_1024(smem_raw);
  const uint32_t sbase = smem_u32(smem);
  Misc& mi = *reinterpret_cast<Misc*>(smem + kOffMisc);
  const int tid = threadIdx.x;
  const Split s = cta_split<kT>(p);
  if (tid == 0) {
    for (int st = 0; st < 2; ++st) {
      mbar_init(&mi.full[st], 128);
      mbar_init(&mi.empty[st], 256);
      mbar_init(&mi.pfull[st], 128);
      mbar_init(&mi.pempty[st], 128);
    }
  }
  load_q<F8>(p, s.r, sbase, smem, mi, tid);
  fence_proxy_async();
  __syncthreads();
  if (tid >= 256) produce<F8>(p, s, smem, sbase, mi, tid - 256);
  else if constexpr (!kPipe) consume<F8>(p, s, smem, sbase, mi, tid >> 7, tid & 127);
  else if (tid < 128) consume_scores<F8>(p, s, smem, sbase, mi, tid);
  else consume_output<F8>(p, s, sbase, mi, tid - 128);
}

}  // namespace

bool mla_decode_wgmma_supported(const DeviceContext& ctx) {
  return ctx.info.sm_major == 9 && size_t(ctx.info.smem_per_block_optin) >= kSmem;
}

void configure_mla_decode_wgmma(const DeviceContext& ctx) {
  if (!mla_decode_wgmma_supported(ctx)) return;
  set_max_dynamic_smem(mla_decode_wgmma_kernel<false, false>, kSmem);
  set_max_dynamic_smem(mla_decode_wgmma_kernel<true, false>, kSmem);
  set_max_dynamic_smem(mla_decode_wgmma_kernel<false, true>, kSmem);
  set_max_dynamic_smem(mla_decode_wgmma_kernel<true, true>, kSmem);
}

void launch_mla_decode_wgmma(const MlaDecodeParams& p, const DeviceContext& ctx) {
  const dim3 grid(unsigned(p.num_splits), unsigned(p.rows));
  auto kernel = p.fp8_cache ? (p.wgmma_pipe ? mla_decode_wgmma_kernel<true, true> : mla_decode_wgmma_kernel<true, false>)
                            : (p.wgmma_pipe ? mla_decode_wgmma_kernel<false, true> : mla_decode_wgmma_kernel<false, false>);
  launch_pdl(kernel, grid, kThreads, kSmem, ctx, p);
  DS_CUDA_CHECK_LAUNCH();
}

}  // namespace ds::gpu
