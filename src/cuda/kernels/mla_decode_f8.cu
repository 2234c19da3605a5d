// The absorbed MLA decode over the FP8 latent cache on FP8 tensor cores (see mla_decode_f8.h; mla_decode.h for
// the maths and the cache layout).
//
// Why: the Hopper kernel (mla_decode_wgmma.cu) converts every e4m3 cache byte to f16 through registers, and its
// wgmmas have the 32 heads as a narrow N (16 or 32) with the whole tile re-read from shared memory as A for
// each instruction; at 1M cached positions it runs at ~31% of the cache bytes' bandwidth (0.464 ms a layer).
// Here the cache bytes are the MMA operands as they are, and the heads are M (consumer c of the two
// warpgroups: the tile's positions 32 c .. 32 c + 31 for the scores, latent dims 256 c .. 256 c + 255 for the
// output):
//   scores  S[64 rows][32 positions]  = Q8 · Cᵀ  (m64n32k32 e4m3, A = Q8 and B = the tile's rows, both K-major
//                                                 in shared memory; 16 latent k-steps + 2 rope k-steps)
//   output  O[64 rows][256 dims]     += P8 · C   (m64n128k32 e4m3, A = P8 and B = the tile transposed, both in
//                                                 shared memory; 2 k-steps of 32 positions, twice)
// Q8 and P8 hold each head twice: row 16 w + g the e4m3 "hi" of head 8 w + g and row 16 w + g + 8 its "lo"
// (hi = e4m3(x), lo = e4m3(x - hi): ~2^-9 relative rounding, bf16's), so the thread that owns accumulator rows g
// and g + 8 of warp w sums the two halves of its head's scores in registers, and writes the head's hi and lo
// weights as rows g and g + 8 of P8. The 32 heads fill M = 64.
//   Q8: each head scaled by a power of two s_h (its largest value in [2^7, 2^8)); the scores are divided by s_h.
//   P8: p · (the position's row scale) · 2^(8 - E), E the exponent above every row scale seen so far (so P8 <
//       256 < 448, e4m3's largest); the output is kept in units of 2^(E - 8) and rescaled by a power of two when E
//       grows (exact), like mla_decode_wgmma.cu's f16 Pᵀ.
//   Softmax: the two consumers' per-head tile maxima meet in shared memory (named barrier of 256); each writes
//       its 32 positions of P8 (double-buffered by tile parity).
//   Each tile's product goes into a fresh accumulator that the CUDA cores add to the fp32 output (the hi and lo
//       rows of a head summed there: 64 registers): the FP8 tensor cores accumulate with ~14 bits (DeepSeek-V3
//       report), and summing ~300 tiles in them measured 4.6% error against 0.2% this way (session 21).
//   Tile i's product is issued after tile i + 1's scores and runs while tile i + 1's transposition and softmax
//       do (its P8 and T buffers by tile parity; "tile -1" reads zeroed buffers, so that no branch guards a wgmma:
//       ptxas serialises wgmmas behind waits it inserts in divergent paths). Session 23: 1M 0.379 vs 0.394 ms
//       a layer, batch-1 TPOT at 1,048,000 positions 5.58 / 5.63 vs 5.76 / 5.75 ms (docs/PERF.md).
// The output's B must be K-major (8-bit operands have no transposed form): each consumer transposes its 256
// dims of the tile into T (rows = dims, 64 positions each, 8-row x 16-byte core matrices without swizzling,
// 8-dim groups kTSbo bytes apart so the byte-transposing writes hit 32 banks) while its scores and the previous
// tile's product run. The K order
// of T and P8 is the order in which a thread's score columns fall into 4-byte words: K index 32 t + 16 h + 4 q + i
// is position 8 (4 t + 2 h + i / 2) + 2 q + i % 2 (t: the consumer whose positions they are, h: word half, q:
// lane % 4), so each thread writes its P8 as 4 words.
// CTA = one (split, row), 256 threads (two warpgroups: 255 registers a thread; a ninth producer warp would
// put 3 warps on an SM sub-partition and cap them at 168). The copies are TMA boxes of one page part each (the
// page's rows of the tile: block_size rows, or 64 of a larger page), issued kStages - 1 tiles ahead into a ring by
// lane 0 of consumer 0's four warps (part j by warp j % 4): the latent dims as four 128-byte swizzled atoms
// (wgmma.cuh), the rope dims as four 16-byte columns (core matrices: rows 16 bytes apart, columns 1,024), the row's
// scale as a fifth 16-byte column into a ring of its own. Rows past the context (of a part the copies still take,
// or stale from an earlier tile) are masked by the consumers: their weights and scales are zero and the
// transposition writes zeros for them (cache bytes never written may be e4m3 NaNs, and 0 x NaN is NaN).
// Measured (sessions 21-22, docs/PERF.md): right (MlaDecode.Fp8TensorCores). The first form was issue-bound and
// slower than the f16 pipelined one (1M: 0.546 vs 0.464 ms a layer; ~1,800 instructions a warp a tile); with the
// copies by kind in whole warps, 8-byte transposition reads and paired e4m3 conversions (~1,100 a warp a tile,
// ncu) it is the fastest over the FP8 cache (1M: 0.410 vs 0.459) and the default (DELTASERVE_CUDA_MLA_DECODE_F8MMA);
// with the TMA copies 0.393 (~800 SASS instructions a warp a tile, 37% of the bandwidth). Now latency-bound: 2 warps
// a scheduler issue 37% of cycles, their stalls per instruction barrier 1.5, fixed-latency waits 1.4, long
// scoreboard 0.7; without the output product 0.326, without the score MMAs 0.350, without the transposition 0.350.
// Slower when tried: every warp issuing a share of the copies with the output in four 64-dim chunks, two in flight
// (session 22: 0.428); each consumer scoring all 64 positions with the whole softmax, so that the two never meet
// at a barrier inside the loop (session 23: 0.482 vs 0.435); the issuers' part count and L2 prefetch through
// tile_page_part's page walk instead of the loops below (session 23: 0.436 / 0.441 vs 0.392 / 0.394, same call).
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "cuda/cuda_check.h"
#include "cuda/kernels/common.cuh"
#include "cuda/kernels/fp8_codec.cuh"
#include "cuda/kernels/kda_mma.cuh"
#include "cuda/kernels/mla_decode_common.cuh"
#include "cuda/kernels/mla_decode_f8.h"
#include "cuda/kernels/tma.h"
#include "cuda/kernels/wgmma.cuh"

namespace ds::gpu {
namespace {

using namespace mla_dec;
using namespace wg;
using attn::fast_exp2;
using attn::kLog2e;

constexpr int kT = 64;                            // cached positions a tile
constexpr int kStages = 3;  // (4 with a single T buffer a consumer: session 22)
constexpr int kAtom = kT * 128;                   // 64 rows x 128 latent dims (bytes)
constexpr int kRopeOff = 4 * kAtom;               // rope dims: core matrices, 8 rows x 16 bytes
constexpr int kStageBytes = kRopeOff + kT * kRope;  // 36,864 (the rows' fp32 scales: a ring of their own)
constexpr int kQBytes = kStageBytes;              // Q8: 64 rows, the same layout
constexpr int kTSbo = 528;                        // T: 8-dim groups 512 + 16 bytes apart
constexpr int kTBytes = 32 * kTSbo;               // a consumer's 256 dims x 64 positions
constexpr int kOffQ = kStages * kStageBytes;
constexpr int kOffT = kOffQ + kQBytes;
constexpr int kPBytes = 64 * 64;                  // P8: 64 rows x 64 positions, core matrices (8-row groups 512 apart)
constexpr int kOffP = kOffT + 4 * kTBytes;        // T: [consumer][tile % 2]; then two P8 buffers (tile i: i % 2)
constexpr int kOffScales = kOffP + 2 * kPBytes;   // [stage][64][16 bytes]: the rows' scales
constexpr int kScaleRow = 16;                     // a row's scale column (the fp32 scale, then 12 bytes of padding)
constexpr int kOffMisc = kOffScales + kStages * kT * kScaleRow;
constexpr int kThreads = 256;                     // two warpgroups

struct Misc {
  float qsc[kRows];            // Q8's power-of-two scale per head
  float red[2][2][kRows];      // [tile % 2][consumer][head]: the head's maximum over the consumer's positions
  float fin_l[2][kRows];       // [consumer][head]: the head's sum over the consumer's positions
  uint64_t full[kStages], empty[kStages];  // full: the 4 issuing threads' arrivals + the bytes; empty: 256 arrivals
};
constexpr int kIssuers = 4;  // lane 0 of consumer 0's warps
constexpr size_t kSmem = size_t(kOffMisc) + sizeof(Misc) + 1024;
static_assert(kSmem <= 232448, "beyond 227 KiB of shared memory");
static_assert(kStageBytes % 1024 == 0 && kOffQ % 1024 == 0, "atoms start on 1024-byte boundaries");
static_assert(kThreads == 4 * kT, "the transposition's and scores' shares assume 64 positions and 256 threads");

// The cache's tensor maps (kernels/tma.h; the layer's cache as rows of kF8Row bytes): `lat` boxes of 128 bytes x
// box_rows rows, 128-byte swizzled; `side` boxes of 16 bytes x box_rows rows, unswizzled (rope columns, scales).
struct F8Maps {
  CUtensorMap lat, side;
  int box_rows;  // min(block_size, 64): a page part
};

// Byte offset of dim d (a multiple of 4) of row r in a stage or in Q8: latent dims in 128-byte swizzled atoms,
// rope dims in 16-byte columns of 64 rows (8-row x 16-byte core matrices; the next 8 rows 128 bytes on, the next
// 16 dims 1,024: the layout of the TMA's unswizzled 16-byte boxes).
__device__ __forceinline__ uint32_t lat_off(int r, int d) {
  return uint32_t(d >> 7) * kAtom + swz(r, (d & 127) >> 4) + uint32_t(d & 15);
}
__device__ __forceinline__ uint32_t rope_off(int r, int dd) {
  return kRopeOff + uint32_t(dd >> 4) * 1024 + uint32_t(r) * 16 + uint32_t(dd & 15);
}
__device__ __forceinline__ uint32_t dim_off(int r, int d) { return d < kLat ? lat_off(r, d) : rope_off(r, d - kLat); }

// Q8: head h's 576 values as e4m3 hi (row 16 (h / 8) + h % 8) and lo (that row + 8), scaled by a power of two so
// that its largest value lies in [2^7, 2^8); heads >= H are zeros. A warp a head.
__device__ void load_q8(const MlaDecodeParams& p, int r, unsigned char* smem, Misc& mi, int tid) {
  const bf16* q = static_cast<const bf16*>(p.q) + int64_t(r) * p.ldq;
  const int warp = tid >> 5, lane = tid & 31;
  for (int h = warp; h < kRows; h += kThreads / 32) {
    uint4 v[3];
    const float s = ldexpf(1.f, 8 - warp_max_exponent(load_q_head(q, h, p.num_heads, lane, v)));
    const int rh = 16 * (h >> 3) + (h & 7), rl = rh + 8;
#pragma unroll
    for (int k = 0; k < 3; ++k) {
      const int ch = lane + 32 * k;
      if (ch >= 72) continue;
      const bf16* x = reinterpret_cast<const bf16*>(&v[k]);
      uint32_t hw[2] = {0, 0}, lw[2] = {0, 0};
#pragma unroll
      for (int t = 0; t < 8; ++t) {
        const float y = __bfloat162float(x[t]) * s;
        const uint8_t hb = to_e4m3(y), lb = to_e4m3(y - from_e4m3(hb));
        hw[t >> 2] |= uint32_t(hb) << (8 * (t & 3));
        lw[t >> 2] |= uint32_t(lb) << (8 * (t & 3));
      }
      const int d = 8 * ch;  // 8 values: half of a 16-byte chunk (d % 16 is 0 or 8)
      *reinterpret_cast<uint2*>(smem + kOffQ + dim_off(rh, d)) = make_uint2(hw[0], hw[1]);
      *reinterpret_cast<uint2*>(smem + kOffQ + dim_off(rl, d)) = make_uint2(lw[0], lw[1]);
    }
    if (lane == 0) mi.qsc[h] = s;
  }
}

// ---- the copies --------------------------------------------------------------------------------------------
// Issuer w's (lane 0 of consumer 0's warp w) TMA copies of tile i into stage i % kStages: page parts j = w, w + 4,
// ... of box_rows rows inside the context (a part past it is not copied), after its arrival on the stage's `full`
// mbarrier with their bytes; and the L2 prefetch of its parts of tile i + pf.
__device__ __forceinline__ int part_row(const MlaDecodeParams& p, const Split& s, int pos) {
  return s.bt[pos / p.block_size] * p.block_size + pos % p.block_size;  // (fits int32: 2^31 rows = 1.2 TB)
}
__device__ __forceinline__ void issue_tile(const MlaDecodeParams& p, const F8Maps& mp, const Split& s, uint32_t sbase,
                                           Misc& mi, int i, int w) {
  if (i >= s.n) return;
  const int st = i % kStages, R = mp.box_rows, t0 = (s.tile0 + i) * kT;
  uint32_t bytes = 0;
  for (int j = w; j * R < kT && t0 + j * R < s.ctx; j += kIssuers) bytes += uint32_t(R) * kF8Row;
  mbar_arrive_expect_tx(&mi.full[st], bytes);
  const uint32_t dst = sbase + uint32_t(st) * kStageBytes;
  for (int j = w; j * R < kT && t0 + j * R < s.ctx; j += kIssuers) {
    const int row = part_row(p, s, t0 + j * R);
#pragma unroll
    for (int a = 0; a < 4; ++a)  // (a part's rows: 128 bytes each in an atom, 16 in a column)
      tma_load_2d(dst + uint32_t(a * kAtom + j * R * 128), &mp.lat, 128 * a, row, &mi.full[st]);
#pragma unroll
    for (int k = 0; k < 4; ++k)
      tma_load_2d(dst + uint32_t(kRopeOff + k * 1024 + j * R * 16), &mp.side, kLat + 16 * k, row, &mi.full[st]);
    tma_load_2d(sbase + uint32_t(kOffScales + (st * kT + j * R) * kScaleRow), &mp.side, kQk, row, &mi.full[st]);
  }
}
__device__ __forceinline__ void prefetch_tile(const MlaDecodeParams& p, const F8Maps& mp, const Split& s, int i, int w) {
  if (i >= s.n) return;
  const int R = mp.box_rows, t0 = (s.tile0 + i) * kT;
  for (int j = w; j * R < kT && t0 + j * R < s.ctx; j += kIssuers)
    prefetch_l2_bulk(static_cast<const uint8_t*>(p.cache) + int64_t(part_row(p, s, t0 + j * R)) * kF8Row,
                     uint32_t(R) * kF8Row);
}

// ---- consumers ----------------------------------------------------------------------------------------
// Consumer c's 256 dims of the stage's tile into its T: warp w takes K word column group W = w (K words 4 W .. 4 W + 3;
// lane (m, qq) word 4 W + qq: positions a, a + 1, a + 8, a + 9) over 4 steps of 64 dims; lane (m, qq) reads 8 bytes
// (dims d .. d + 7, d = 256 c + 64 k + 8 m) of each of its 4 positions and writes them as 8 words (one a dim: an
// 8-dim group of T). Reads: 16 lanes cover one 128-byte swizzled row's 8 chunks; writes: 32 banks (kTSbo).
// kMask (the context's last tile): positions >= nvalid are written as zeros.
__device__ __forceinline__ void transpose4(uint32_t r0, uint32_t r1, uint32_t r2, uint32_t r3, unsigned char* dst) {
  const uint32_t t0 = __byte_perm(r0, r1, 0x5140), t1 = __byte_perm(r0, r1, 0x7362);
  const uint32_t t2 = __byte_perm(r2, r3, 0x5140), t3 = __byte_perm(r2, r3, 0x7362);
  *reinterpret_cast<uint32_t*>(dst) = __byte_perm(t0, t2, 0x5410);
  *reinterpret_cast<uint32_t*>(dst + 16) = __byte_perm(t0, t2, 0x7632);
  *reinterpret_cast<uint32_t*>(dst + 32) = __byte_perm(t1, t3, 0x5410);
  *reinterpret_cast<uint32_t*>(dst + 48) = __byte_perm(t1, t3, 0x7632);
}
template <bool kMask>
__device__ __forceinline__ void transpose_half(const unsigned char* st, unsigned char* tp, int c, int w, int lane,
                                               int nvalid) {
  const int m = lane >> 2, qq = lane & 3;
  const int a = 8 * (4 * (w >> 1) + 2 * (w & 1)) + 2 * qq;  // even: row a + 1 swizzles with (a & 7) | 1
  const unsigned char* ra = st + a * 128 + 8 * (m & 1);
  unsigned char* dst = tp + m * kTSbo + w * 128 + 4 * qq;
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const int atom = 2 * c + (k >> 1), chunk = 4 * (k & 1) + (m >> 1);
    const unsigned char* pa = ra + atom * kAtom + ((chunk ^ (a & 7)) << 4);
    const unsigned char* pb = ra + atom * kAtom + 128 + ((chunk ^ ((a & 7) | 1)) << 4);
    uint2 r0 = *reinterpret_cast<const uint2*>(pa), r1 = *reinterpret_cast<const uint2*>(pb);
    uint2 r2 = *reinterpret_cast<const uint2*>(pa + 1024), r3 = *reinterpret_cast<const uint2*>(pb + 1024);
    if constexpr (kMask) {  // positions a, a + 1, a + 8, a + 9
      const uint2 z = make_uint2(0, 0);
      r0 = a < nvalid ? r0 : z;
      r1 = a + 1 < nvalid ? r1 : z;
      r2 = a + 8 < nvalid ? r2 : z;
      r3 = a + 9 < nvalid ? r3 : z;
    }
    unsigned char* dk = dst + 8 * k * kTSbo;
    transpose4(r0.x, r1.x, r2.x, r3.x, dk);       // dims d .. d + 3
    transpose4(r0.y, r1.y, r2.y, r3.y, dk + 64);  // dims d + 4 .. d + 7
  }
}

// The named barrier of both consumers (id 0 is __syncthreads').
constexpr int kBarBoth = 3;

__device__ void consume(const MlaDecodeParams& p, const F8Maps& mp, const Split& s, unsigned char* smem, uint32_t sbase,
                        Misc& mi, int c, int wt) {
  const int lane = wt & 31, w = wt >> 5, q = lane & 3;
  const int h = 8 * w + (lane >> 2);  // the thread's head: rows 16 w + g (hi) and + 8 (lo) of both products
  const float qf = p.scale * kLog2e / mi.qsc[h];
  const uint32_t qbase = sbase + kOffQ, tbase = sbase + kOffT + uint32_t(2 * c) * kTBytes;
  const uint64_t dq = desc_k_sw128(qbase), dqr = desc_k_none(qbase + kRopeOff, 1024, 128);
  const uint64_t dt0 = desc_k_none(tbase, 128, kTSbo), dp0 = desc_k_none(sbase + kOffP, 128, 512);
  // the output of the consumer's 256 dims for head h, fp32, the hi and lo rows summed: o[nb][2 j + e] is dim
  // 256 c + 128 nb + 8 j + 2 q + e (each tile's product is added on the CUDA cores)
  float o[2][32];
#pragma unroll
  for (int nb = 0; nb < 2; ++nb)
#pragma unroll
    for (int e = 0; e < 32; ++e) o[nb][e] = 0.f;
  float acc[2][64];  // the previous tile's product, in flight while this tile's scores, transposition and softmax run
  float m = -INFINITY, l = 0.f;  // the head's running maximum (log2 units) and this thread's part of its sum
  int erun = -1000;              // the output's exponent E (set by the first tile)
  float fprev = 0.f;             // the output's rescale before the previous tile's product is added
  const bool issuer = c == 0 && lane == 0;  // (warp w of consumer 0: issuer w)
  const int pf = p.l2_prefetch_tiles;
  // tile j's product (P8 buffer j % 2, T buffer j % 2) into acc, committed as one group
  auto issue_output = [&](int j) {
    const uint64_t dp = dp0 + uint32_t((j & 1) * kPBytes >> 4), dt = dt0 + uint32_t((j & 1) * kTBytes >> 4);
#pragma unroll
    for (int nb = 0; nb < 2; ++nb)
#pragma unroll
      for (int t = 0; t < 2; ++t)
        wgmma_m64n128k32_e4m3_ss(acc[nb], dp + t * 16, dt + uint32_t((nb * 16 * kTSbo + t * 256) >> 4), t > 0);
    wgmma_commit();
  };
  auto add_output = [&] {
    wgmma_wait<0>();
    reg_fence(acc[0]);
    reg_fence(acc[1]);
#pragma unroll
    for (int nb = 0; nb < 2; ++nb)
#pragma unroll
      for (int j = 0; j < 32; j += 2) {
        o[nb][j] = fmaf(o[nb][j], fprev, acc[nb][2 * j] + acc[nb][2 * j + 2]);
        o[nb][j + 1] = fmaf(o[nb][j + 1], fprev, acc[nb][2 * j + 1] + acc[nb][2 * j + 3]);
      }
  };
  for (int i = 0; i < s.n; ++i) {
    const int st = i % kStages, pb = i & 1;
    // the copies of tile i + kStages - 1, into the stage of tile i - 1 once both warpgroups are done with it
    if (issuer) {
      if (i >= 1) mbar_wait(&mi.empty[(i - 1) % kStages], uint32_t((i - 1) / kStages) & 1u);
      issue_tile(p, mp, s, sbase, mi, i + kStages - 1, w);
      if (pf > 0) prefetch_tile(p, mp, s, i + kStages - 1 + pf, w);
    }
    const uint32_t stage = sbase + uint32_t(st) * kStageBytes;
    const unsigned char* sp = smem + st * kStageBytes;
    const float* scl = reinterpret_cast<const float*>(smem + kOffScales + st * kT * kScaleRow);  // row j: scl[4 j]
    const int nvalid = min(kT, s.ctx - (s.tile0 + i) * kT);  // the tile's positions inside the context
    mbar_wait(&mi.full[st], uint32_t(i / kStages) & 1u);
    // scores of the consumer's 32 positions 32 c .. 32 c + 31 (B: the tile's rows from 32 c)
    // (a descriptor's address field is bits 0-13 of address / 16: offsets inside shared memory add to it)
    const uint64_t db = desc_k_sw128(stage + 32 * c * 128), dbr = desc_k_none(stage + kRopeOff + 32 * c * 16, 1024, 128);
    float sc[16];
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < 16; ++ks) {
      const uint32_t off = ((ks >> 2) * kAtom + (ks & 3) * 32) >> 4;
      wgmma_m64n32k32_e4m3(sc, dq + off, db + off, ks > 0);
    }
#pragma unroll
    for (int ks = 0; ks < 2; ++ks) wgmma_m64n32k32_e4m3(sc, dqr + ks * 128, dbr + ks * 128, 1);  // 2,048 bytes a k-step
    wgmma_commit();
    // then the previous tile's product (its P8 and T written before the last barrier), in flight until the
    // softmax below is done (tile -1: buffers 1, zeros from the start: a product of 0; no branch around a wgmma)
    issue_output(i - 1);
    // meanwhile this consumer's dims of the tile into T buffer i % 2 (its last reader, tile i - 2's product, was
    // waited for by every warp before the previous iteration's last barrier)
    unsigned char* tp = smem + kOffT + (2 * c + pb) * kTBytes;
    if (nvalid == kT) transpose_half<false>(sp, tp, c, w, lane, nvalid);
    else transpose_half<true>(sp, tp, c, w, lane, nvalid);
    float rsc[8];  // the row scales of the thread's 8 positions 32 c + 8 j + 2 q + e (index 2 j + e; 0 past the context)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int jj = 32 * c + 8 * j + 2 * q + e;
        const float v = scl[4 * jj];
        rsc[2 * j + e] = jj < nvalid ? v : 0.f;
      }
    const float s0 = scl[4 * lane], s1 = scl[4 * (lane + 32)];
    const int et = warp_max_exponent(fmaxf(lane < nvalid ? s0 : 0.f, lane + 32 < nvalid ? s1 : 0.f));
    wgmma_wait<1>();  // the scores (the product may still run)
    reg_fence(sc);
    mbar_arrive(&mi.empty[st]);  // done with the stage (scores, transpose and scales)

    // ---- online softmax of the head over the tile: the 4 lanes of a quad hold the consumer's 32 positions,
    // the two consumers' maxima meet in shared memory
    float x[8], tmx = -INFINITY;
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const float v = (sc[4 * j + e] + sc[4 * j + 2 + e]) * qf * rsc[2 * j + e];
        x[2 * j + e] = 32 * c + 8 * j + 2 * q + e < nvalid ? v : -INFINITY;
        tmx = fmaxf(tmx, x[2 * j + e]);
      }
    tmx = fmaxf(tmx, __shfl_xor_sync(0xffffffffu, tmx, 1));
    tmx = fmaxf(tmx, __shfl_xor_sync(0xffffffffu, tmx, 2));
    if (q == 0) mi.red[pb][c][h] = tmx;
    named_sync(kBarBoth, 256);  // (also: both consumers waited for tile i - 2's product, the last reader of P8 i % 2)
    const float m_new = fmaxf(m, fmaxf(mi.red[pb][0][h], mi.red[pb][1][h]));  // finite: position 0 of the tile
    const float alpha = fast_exp2(m - m_new);
    m = m_new;
    float fe = 1.f;
    if (et > erun) {
      fe = ldexpf(1.f, erun - et);
      erun = et;
    }
    const float pu = ldexpf(1.f, 8 - erun);
    uint32_t a[4] = {0, 0, 0, 0};  // this consumer's P8 words: rows g / g + 8, K 32 c + 4 q (a0, a1), + 16 (a2, a3)
    float lsum = 0.f;
#pragma unroll
    for (int j = 0; j < 4; ++j) {  // positions 8 j + 2 q and + 1: bytes 2 (j % 2) and + 1 of word j & 2
      const float p0 = fast_exp2(x[2 * j] - m_new), p1 = fast_exp2(x[2 * j + 1] - m_new);
      lsum += p0 + p1;
      const float y0 = p0 * rsc[2 * j] * pu, y1 = p1 * rsc[2 * j + 1] * pu;
      const uint16_t hb = to_e4m3x2(y0, y1);
      const float2 hv = from_e4m3x2(hb);
      const uint16_t lb = to_e4m3x2(y0 - hv.x, y1 - hv.y);
      const int reg = j & 2, sh = 16 * (j & 1);
      a[reg] |= uint32_t(hb) << sh;
      a[reg + 1] |= uint32_t(lb) << sh;
    }
    {
      unsigned char* pp = smem + kOffP + pb * kPBytes + (2 * w) * 512 + (lane >> 2) * 16 + 4 * q + 2 * c * 128;
      *reinterpret_cast<uint32_t*>(pp) = a[0];
      *reinterpret_cast<uint32_t*>(pp + 512) = a[1];  // row g + 8: the next 8-row group
      *reinterpret_cast<uint32_t*>(pp + 128) = a[2];
      *reinterpret_cast<uint32_t*>(pp + 640) = a[3];
    }
    fence_proxy_async();  // P8 and T, for the product issued in the next iteration
    l = l * alpha + lsum;
    // the previous tile's product into the output (in the previous tile's units, then rescaled with this one's)
    add_output();
    fprev = alpha * fe;
    named_sync(kBarBoth, 256);  // P8 whole (both consumers' positions), T whole
  }
  // the last tile's product: a fresh accumulator per tile, added on the CUDA cores (the FP8 tensor cores
  // accumulate with ~14 bits, DeepSeek-V3 report, so summing every tile in them loses the output's low bits)
  wgmma_fence();
  issue_output(s.n - 1);  // (no tile: tile -1's zeros)
  add_output();

  // ---- the head's sum over its quad and both consumers; normalise and write this consumer's dims
  l += __shfl_xor_sync(0xffffffffu, l, 1);
  l += __shfl_xor_sync(0xffffffffu, l, 2);
  if (q == 0) mi.fin_l[c][h] = l;
  named_sync(kBarBoth, 256);
  l = mi.fin_l[0][h] + mi.fin_l[1][h];
  if (h >= p.num_heads) return;
  const float f = l > 0.f ? ldexpf(1.f / l, erun - 8) : 0.f;
  const bool direct = p.num_splits == 1;
  if (!direct && c == 0 && q == 0) decode_split_lse(p, s.r, s.sp, h) = l > 0.f ? m + log2f(l) : -INFINITY;
#pragma unroll
  for (int nb = 0; nb < 2; ++nb)
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      const int dim = 256 * c + 128 * nb + 8 * j + 2 * q;
      const float x0 = o[nb][2 * j] * f, x1 = o[nb][2 * j + 1] * f;
      if (direct)
        *reinterpret_cast<uint32_t*>(static_cast<bf16*>(p.o) + int64_t(s.r) * p.ldo + int64_t(h) * kLat + dim) =
            attn::pack_bf16(x0, x1);
      else
        *reinterpret_cast<float2*>(decode_split_partial(p, s.r, s.sp, h) + dim) = make_float2(x0, x1);
    }
}

__global__ void __launch_bounds__(kThreads, 1)
    mla_decode_f8_kernel(const __grid_constant__ MlaDecodeParams p, const __grid_constant__ F8Maps mp) {
  pdl_trigger();
  pdl_wait();
  extern __shared__ unsigned char smem_raw[];
  unsigned char* smem = align_1024(smem_raw);
  const uint32_t sbase = smem_u32(smem);
  Misc& mi = *reinterpret_cast<Misc*>(smem + kOffMisc);
  const int tid = threadIdx.x;
  const Split s = cta_split<kT>(p);
  if (tid == 0)
    for (int st = 0; st < kStages; ++st) {
      mbar_init(&mi.full[st], kIssuers);
      mbar_init(&mi.empty[st], kThreads);
    }
  load_q8(p, s.r, smem, mi, tid);
  // T and P8 buffers zero: the first iteration's product of "tile -1" (buffers 1) adds 0 (never-written shared
  // memory may hold e4m3 NaN bytes, and 0 x NaN is NaN)
  for (int k = tid; k < (kOffScales - kOffT) / 16; k += kThreads)
    reinterpret_cast<uint4*>(smem + kOffT)[k] = make_uint4(0, 0, 0, 0);
  fence_proxy_async();  // Q8 and the barriers' initialisation, for the wgmma and the TMA
  __syncthreads();
  if (tid < 128 && (tid & 31) == 0) {  // issuer w = tid / 32
    for (int k = 0; k < kStages - 1; ++k) issue_tile(p, mp, s, sbase, mi, k, tid >> 5);
    for (int k = 0; k < p.l2_prefetch_tiles; ++k) prefetch_tile(p, mp, s, kStages - 1 + k, tid >> 5);
  }
  consume(p, mp, s, smem, sbase, mi, tid >> 7, tid & 127);
}

}  // namespace

bool mla_decode_f8_supported(const DeviceContext& ctx) {
  return ctx.info.sm_major == 9 && size_t(ctx.info.smem_per_block_optin) >= kSmem;
}

bool mla_decode_f8_usable(const MlaDecodeParams& p, const DeviceContext& ctx) {
  // page parts of 8..64 rows: a tile's whole parts, each box landing on a 1,024-byte boundary of an atom
  const bool pages = (p.block_size >= 8 && p.block_size <= 64 && kT % p.block_size == 0) || p.block_size % kT == 0;
  return mla_decode_f8_supported(ctx) && ctx.tensor_map_encoder != nullptr && pages;
}

void configure_mla_decode_f8(const DeviceContext& ctx) {
  if (mla_decode_f8_supported(ctx)) set_max_dynamic_smem(mla_decode_f8_kernel, kSmem);
}

void launch_mla_decode_f8(const MlaDecodeParams& p, const DeviceContext& ctx) {
  DS_GPU_REQUIRE(mla_decode_f8_usable(p, ctx), "mla decode (FP8 MMA): not usable here (sm_90, TMA, pages of 8..64 rows or a multiple of 64)");
  F8Maps mp{};
  mp.box_rows = std::min(p.block_size, kT);
  const RowsMapDesc d{.base = p.cache, .type = CU_TENSOR_MAP_DATA_TYPE_UINT8, .elem_bytes = 1, .cols = kF8Row,
                      .ld = kF8Row, .box_rows = uint32_t(mp.box_rows), .what = "MLA FP8 latent cache"};
  mp.lat = rows_tensor_map(ctx.tensor_map_encoder, d);
  RowsMapDesc side = d;
  side.box_col_bytes = 16;
  side.swizzle = CU_TENSOR_MAP_SWIZZLE_NONE;
  side.what = "MLA FP8 latent cache (rope, scales)";
  mp.side = rows_tensor_map(ctx.tensor_map_encoder, side);
  launch_pdl(mla_decode_f8_kernel, dim3(unsigned(p.num_splits), unsigned(p.rows)), kThreads, kSmem, ctx, p, mp);
  DS_CUDA_CHECK_LAUNCH();
}

}  // namespace ds::gpu
