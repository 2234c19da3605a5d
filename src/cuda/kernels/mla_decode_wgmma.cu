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
// CTA = one (split, row), three warpgroups, one CTA an SM:
//   producer (warpgroup 0): the split's tiles of kT = 64 positions into stage i % 2 (tile i of the split), in
//     wgmma.cuh's 128-byte-swizzled layout: atom a (dims 64a .. 64a + 63) at a · 8 KiB, position j its row j.
//     bf16: cp.async gathers through the block table, completing on the stage's `full` mbarrier. FP8: the raw
//     rows (576 e4m3 + the fp32 scale) are loaded into registers (a whole tile in flight), converted exactly to
//     bf16 into the stage, the rows' scales into ks[stage]. L2 bulk prefetches run l2_prefetch_tiles tiles
//     ahead, so the DRAM stream does not wait on the two stages.
//   consumers (warpgroups 1, 2), both on every tile: consumer c scores half of the 36 k-steps, the halves are
//     summed through shared memory (so both hold the whole Sᵀ); the online softmax per head (a column of Sᵀ:
//     the tile's max over the warpgroup's 4 warps through shared memory, the running sum kept per thread and
//     reduced at the end), identical in both; Pᵀ (bf16; times the row scales for FP8, which scale the scores
//     too, so the cached values themselves are never rounded), each consumer writing half of it; then consumer
//     c accumulates the latent dims 256c .. 256c + 255 of Oᵀ (64 fp32 a thread) and releases the stage.
//   end: each consumer writes its dims of the output (or of the split's normalised partial), consumer 0 the
//   split's log2-sum-exps for the combine.
// Status (session 16, docs/PERF.md): correct, but 2.2x slower than mla_decode.cu at 1M because the producer was
// the bound (alone: 0.78 ms bf16 / 0.60 FP8 a layer, 6 / 5 us a tile, when every 16-byte chunk's copy waited
// on its own block-table lookup and division); the consumers alone take 0.40 ms. The producer now looks the
// tile's rows up once (not yet measured); loading whole page parts (TMA boxes per page and atom for bf16, bulk
// copies of raw FP8 rows) is the step after.
#include <cmath>
#include <cstddef>
#include <cstdint>

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
using attn::pack_bf16;

constexpr int kT = 64;                    // cached positions a tile
constexpr int kAtoms = kQk / 64;          // 9: 8 latent + 1 rope
constexpr int kAtomBytes = kT * 128;      // 8 KiB
constexpr int kStageBytes = kAtoms * kAtomBytes;  // 73,728
constexpr int kQAtom = kRows * 128;       // 4 KiB
constexpr int kPBytes = kRows * 128;      // Pᵀ: 32 heads x 64 positions bf16
constexpr int kKSteps = kQk / 16;         // 36 k-steps of the scores, half a consumer
constexpr int kThreads = 384;
constexpr int kF8Loads = kT * (kQk / 16) / 128;  // FP8: 16-byte loads of a tile a producer thread (18)

constexpr int kOffQ = 2 * kStageBytes;
constexpr int kOffP = kOffQ + kAtoms * kQAtom;
constexpr int kOffX = kOffP + kPBytes;    // the consumers' partial scores, [c][element][thread] fp32
constexpr int kOffMisc = kOffX + 2 * 16 * 128 * 4;

struct Misc {
  float red[2][2][4][kRows];  // [consumer][tile parity][warp][head]: the tile's column maxima, the final sums
  float ks[2][kT];            // FP8: the row scales of stage s
  int64_t rows[2][kT];        // the producer's cache rows of tile i's positions (i % 2; -1 past the context)
  uint64_t full[2], empty[2];
};
constexpr size_t kSmem = size_t(kOffMisc) + sizeof(Misc) + 1024;
static_assert(kSmem <= 232448, "beyond 227 KiB of shared memory");

// named barriers: 1 + c consumer c alone, 3 both consumers, 4 the producer
constexpr int kBarConsumer0 = 1, kBarBoth = 3, kBarProducer = 4;

__device__ __forceinline__ uint4 ld_nc16(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

struct Split {  // this CTA's share of its row: tiles tile0 .. tile0 + n - 1
  int r, sp, ctx, tile0, n;
  const int32_t* bt;
};

// ---- producer ------------------------------------------------------------------------------------
template <bool F8>
__device__ void produce(const MlaDecodeParams& p, const Split& s, unsigned char* smem, uint32_t sbase, Misc& mi,
                        int wt) {
  const int bs = p.block_size;
  auto row_of = [&](int pos) { return int64_t(s.bt[pos / bs]) * bs + pos % bs; };
  const int pf = p.l2_prefetch_tiles;
  auto prefetch = [&](int i) {  // tile i's page parts into L2 (thread wt: the wt-th page it touches)
    if (pf <= 0 || i >= s.n) return;
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
    // the tile's 64 cache rows, looked up once (not per 16-byte chunk: a block-table load and a division
    // ahead of every copy made the producer the bound, 6 us a tile, session 16). Tile i - 2's table, in the
    // same slot, was last read before the barrier of tile i - 1.
    int64_t* rows = mi.rows[st];
    if (wt < kT) rows[wt] = pos0 + wt < s.ctx ? row_of(pos0 + wt) : -1;
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
        const bf16* src = ok ? cache + row * kQk + ch * 8 : cache;
        cp16(dst + (ch >> 3) * kAtomBytes + swz(j, ch & 7), src, ok);
      }
      // the copies landed, then the generic-to-async proxy fence on the writer's side (measured the same as the
      // readers fencing after their wait, session 16)
      cp_wait_all();
      fence_proxy_async();
      mbar_arrive(&mi.full[st]);
    } else {
      // the tile's raw rows into registers (thread: groups idx = wt + 128 k of 16 values, row idx / 36), then
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
        const uint32_t w[4] = {v[k].x, v[k].y, v[k].z, v[k].w};
        uint32_t b[8];
#pragma unroll
        for (int h = 0; h < 4; ++h) {
          const float2 lo = from_e4m3x2(uint16_t(w[h] & 0xffffu)), hi = from_e4m3x2(uint16_t(w[h] >> 16));
          b[2 * h] = pack_bf16(lo.x, lo.y);
          b[2 * h + 1] = pack_bf16(hi.x, hi.y);
        }
        unsigned char* atom = stage + (c >> 2) * kAtomBytes;  // dims 16c .. 16c + 15: chunks 2(c % 4), +1
        *reinterpret_cast<uint4*>(atom + swz(j, 2 * (c & 3))) = make_uint4(b[0], b[1], b[2], b[3]);
        *reinterpret_cast<uint4*>(atom + swz(j, 2 * (c & 3) + 1)) = make_uint4(b[4], b[5], b[6], b[7]);
      }
      if (wt < kT) mi.ks[st][wt] = scale;
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
  const uint32_t qs = sbase + kOffQ, ps = sbase + kOffP;
  unsigned char* pbuf = smem + kOffP;
  float* xs_own = reinterpret_cast<float*>(smem + kOffX) + c * 16 * 128;
  const float* xs_other = reinterpret_cast<const float*>(smem + kOffX) + (1 - c) * 16 * 128;
  const float scale_log2 = p.scale * kLog2e;
  const int ra = 16 * wq + (lane >> 2), rb = ra + 8;  // the thread's two positions of a tile
  float o[4][16];
#pragma unroll
  for (int b = 0; b < 4; ++b)
#pragma unroll
    for (int e = 0; e < 16; ++e) o[b][e] = 0.f;
  float mh[8], lp[8];
#pragma unroll
  for (int q = 0; q < 8; ++q) {
    mh[q] = -INFINITY;
    lp[q] = 0.f;
  }
  for (int i = 0; i < s.n; ++i) {
    const int st = i & 1;
    const uint32_t stage = sbase + st * kStageBytes;
    mbar_wait(&mi.full[st], uint32_t(i >> 1) & 1u);
    // ---- this consumer's half of Sᵀ = C·Qᵀ (k-steps 18c .. 18c + 17)
    float sc[16];
    wgmma_fence();
#pragma unroll
    for (int k = 0; k < kKSteps / 2; ++k) {
      const int ks = (kKSteps / 2) * c + k;
      wgmma_m64n32k16<0>(sc, desc_k_sw128(stage + (ks >> 2) * kAtomBytes + (ks & 3) * 32),
                         desc_k_sw128(qs + (ks >> 2) * kQAtom + (ks & 3) * 32), k > 0);
    }
    wgmma_commit();
    wgmma_wait<0>();
    reg_fence(sc);
#pragma unroll
    for (int e = 0; e < 16; ++e) xs_own[e * 128 + wt] = sc[e];
    named_sync(kBarBoth, 256);  // both halves written (and the previous tile's Pᵀ read by both)

    // ---- online softmax over the tile's positions, per head (the same in both consumers)
    const int pos0 = (s.tile0 + i) * kT;
    const float ka = F8 ? mi.ks[st][ra] : 1.f, kb = F8 ? mi.ks[st][rb] : 1.f;
    const bool va = pos0 + ra < s.ctx, vb = pos0 + rb < s.ctx;
    float tmx[8];
#pragma unroll
    for (int q = 0; q < 8; ++q) tmx[q] = -INFINITY;
#pragma unroll
    for (int e = 0; e < 16; ++e) {
      const bool lo = (e & 2) == 0;
      // (c0 + c1 in the same order in both consumers, so their scores agree bit for bit)
      const float both = c == 0 ? sc[e] + xs_other[e * 128 + wt] : xs_other[e * 128 + wt] + sc[e];
      const float x = both * scale_log2 * (lo ? ka : kb);
      sc[e] = (lo ? va : vb) ? x : -INFINITY;
      const int q = 2 * (e >> 2) + (e & 1);
      tmx[q] = fmaxf(tmx[q], sc[e]);
    }
#pragma unroll
    for (int q = 0; q < 8; ++q)
#pragma unroll
      for (int sh = 4; sh < 32; sh <<= 1) tmx[q] = fmaxf(tmx[q], __shfl_xor_sync(0xffffffffu, tmx[q], sh));
    float(*red)[kRows] = mi.red[c][i & 1];
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
#pragma unroll
    for (int e = 0; e < 16; ++e) {
      const int q = 2 * (e >> 2) + (e & 1);
      const bool lo = (e & 2) == 0;
      const float pv = fast_exp2(sc[e] - mh[q]);
      lsum[q] += pv;
      if (lo == (c == 0)) {  // consumer 0 writes the rows ra of Pᵀ, consumer 1 the rows rb
        const int h = head_of(q, lane), pos = lo ? ra : rb;
        *reinterpret_cast<bf16*>(pbuf + swz(h, pos >> 3) + (pos & 7) * 2) =
            __float2bfloat16_rn(F8 ? pv * (lo ? ka : kb) : pv);
      }
    }
#pragma unroll
    for (int q = 0; q < 8; ++q) lp[q] = lp[q] * alpha[q] + lsum[q];
#pragma unroll
    for (int b = 0; b < 4; ++b)
#pragma unroll
      for (int e = 0; e < 16; ++e) o[b][e] *= alpha[2 * (e >> 2) + (e & 1)];
    fence_proxy_async();  // Pᵀ, for the wgmma below
    named_sync(kBarBoth, 256);  // Pᵀ whole (and both consumers' partial scores read)

    // ---- Oᵀ += Cᵀ·Pᵀ over this consumer's dims 256c .. 256c + 255
    wgmma_fence();
#pragma unroll
    for (int b = 0; b < 4; ++b)
#pragma unroll
      for (int kk = 0; kk < kT / 16; ++kk)
        wgmma_m64n32k16<1>(o[b], desc_mn_sw128(stage + (4 * c + b) * kAtomBytes + kk * 2048, kAtomBytes),
                           desc_k_sw128(ps + kk * 32), 1);
    wgmma_commit();
    wgmma_wait<0>();
#pragma unroll
    for (int b = 0; b < 4; ++b) reg_fence(o[b]);
    mbar_arrive(&mi.empty[st]);
  }

  // ---- the sums per head over the warpgroup; normalise and write this consumer's dims
  float(*red)[kRows] = mi.red[c][s.n & 1];
#pragma unroll
  for (int q = 0; q < 8; ++q)
#pragma unroll
    for (int sh = 4; sh < 32; sh <<= 1) lp[q] += __shfl_xor_sync(0xffffffffu, lp[q], sh);
  if (lane < 4)
#pragma unroll
    for (int q = 0; q < 8; ++q) red[wq][head_of(q, lane)] = lp[q];
  named_sync(bar, 128);
  const int H = p.num_heads;
  float inv[8];
#pragma unroll
  for (int q = 0; q < 8; ++q) {
    const int h = head_of(q, lane);
    const float L = red[0][h] + red[1][h] + red[2][h] + red[3][h];
    inv[q] = L > 0.f ? 1.f / L : 0.f;
    if (c == 0 && wq == 0 && lane < 4 && p.num_splits > 1 && h < H)
      decode_split_lse(p, s.r, s.sp, h) = L > 0.f ? mh[q] + log2f(L) : -INFINITY;
  }
  const bool direct = p.num_splits == 1;
#pragma unroll
  for (int b = 0; b < 4; ++b)
#pragma unroll
    for (int e = 0; e < 16; ++e) {
      const int q = 2 * (e >> 2) + (e & 1), h = head_of(q, lane);
      if (h >= H) continue;
      const int dim = 64 * (4 * c + b) + 16 * wq + (lane >> 2) + 8 * ((e >> 1) & 1);
      const float x = o[b][e] * inv[q];
      if (direct)
        static_cast<bf16*>(p.o)[int64_t(s.r) * p.ldo + int64_t(h) * kLat + dim] = __float2bfloat16_rn(x);
      else
        decode_split_partial(p, s.r, s.sp, h)[dim] = x;
    }
}

template <bool F8>
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
  // Q (heads >= H zero) into its atoms: 32 rows x 72 chunks of 16 bytes
  const bf16* q = static_cast<const bf16*>(p.q) + int64_t(s.r) * p.ldq;
  for (int idx = tid; idx < kRows * 72; idx += kThreads) {
    const int h = idx / 72, ch = idx % 72;
    const bool ok = h < p.num_heads;
    cp16(sbase + kOffQ + (ch >> 3) * kQAtom + swz(h, ch & 7), ok ? q + int64_t(h) * kQk + ch * 8 : q, ok);
  }
  cp_wait_all();
  fence_proxy_async();
  __syncthreads();
  if (tid < 128) produce<F8>(p, s, smem, sbase, mi, tid);
  else consume<F8>(p, s, smem, sbase, mi, tid / 128 - 1, tid % 128);
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
