// FP8 x split-bf16 GEMMs on Hopper FP8 wgmma (see moe_gemm_fp8_wgmma.h).
//
// A CTA is one warpgroup (128 threads). It owns 64 * MT weight rows (SiLU-mul: 64 gate rows and the matching
// 64 up rows) of one matrix (an active expert, or the dense matrix) and the expert's token tiles of TW rows
// (16, or 64 at prefill-sized grouped launches), one after another. Per k block of 128 a stage holds the
// weight rows' raw e4m3 bytes and the token tile's hi and lo bytes, all K-major in the 128-byte swizzled
// layout of wgmma.cuh (one 128-byte row per weight row or token), and the tokens' x scales, copied by
// cp.async kStages - 1 blocks ahead. Each block runs, per 64-row tile, 4 k steps x 2 parts of wgmma
// m64nTWk32 e4m3 into a fresh fp32 partial (D = weights x tokens, both from shared memory), waits, and adds
// the partial times the weight scale of its rows and the x scale of its tokens to the accumulator (the
// scales change with the k block, so the FP8 products are summed per block, as DeepGEMM does).
// Accumulator element i of a thread (warp w, lane g * 4 + q) is row 16 w + g + 8 ((i >> 1) & 1) of the tile,
// token 8 (i >> 2) + 2 q + (i & 1).
// INT4 weights (I4): the stage holds the rows' nibbles, turned into e4m3 atoms in shared memory per k block
// before the MMAs (int4x32_to_e4m3); groups narrower than 128 get a partial per k step (NP = 4). With SUB
// (DeviceContext::switches.int4_subnormal) each nibble n becomes the e4m3 byte n, whose value is n x 2^-9
// (int4x32_subnormal: masks and byte permutes, no zero point), and the zero point comes off each partial sum:
// with t = sum_k n_k 2^-9 x_k and S = sum_k x_k over the partial's columns, sum_k (n_k - zero) x_k =
// 2^9 t - zero S. S comes with the x split (its sums of hi + lo per 32 columns, x_split_sums_offset), copied
// into a small ring beside the x scales: the same x values the MMAs multiply, summed once per token (session
// 29's form took a wgmma of a tile of e4m3 ones per partial, a third of the gate/up MMAs and half the down's).
// Split-K (dense launches, gridDim.z > 1): each CTA takes a range of k blocks; the last to finish a tile adds
// the others' fp32 partials (arrival counters in the workspace) and writes it.
#include "cuda/kernels/moe_gemm_fp8_wgmma.h"

#include "cuda/kernels/common.cuh"
#include "cuda/kernels/fp8_codec.cuh"
#include "cuda/kernels/tma.h"
#include "cuda/kernels/wgmma.cuh"

namespace ds::gpu {
namespace {

using namespace wg;

constexpr int kKb = kXSplitBlock, kThreadsW = 128;

// One pipeline stage (k block of 128): the weight rows (FP8: their e4m3 bytes as 128-byte swizzled atoms;
// INT4: their 64 bytes of nibbles, row after row) and the token tile's x hi and lo atoms; the tokens' x
// scales of the block sit in a small ring of their own after the stages. INT4 adds one area outside the
// ring where the current block's nibbles become e4m3 atoms (nibble - zero: an integer of -15..15, exact in
// e4m3) before the MMAs; SUB adds a ring of the tokens' x sums, 4 floats (32 columns each) a token a stage.
template <int MT, bool I4, int ST = 4, int TW = 16, int XP = 2, bool SUB = false>
struct StageW {  // ST: pipeline stages, TW: token tile, XP: x parts (hi, lo), SUB: the x sums ring (INT4 subnormals)
  static constexpr int kRowBytes = I4 ? 64 : 128;                // bytes of one weight row per k block
  static constexpr uint32_t kWBytes = uint32_t(MT) * 64 * kRowBytes;
  static constexpr uint32_t kXBytes = TW * 128;                  // one part of the token tile
  static constexpr uint32_t kBytes = kWBytes + XP * kXBytes;     // a multiple of 1024: atoms stay aligned
  static constexpr uint32_t kConvOff = uint32_t(ST) * kBytes;
  static constexpr uint32_t kConvBytes = I4 ? uint32_t(MT) * 64 * 128 : 0;
  static constexpr uint32_t kXsOff = kConvOff + kConvBytes;  // the token tile's x scales, TW floats a stage
  static constexpr uint32_t kXsumOff = kXsOff + uint32_t(ST) * TW * 4;  // SUB: its x sums, 4 floats a token a stage
  static constexpr uint32_t kXsumBytes = SUB ? uint32_t(ST) * TW * 16 : 0;
  static constexpr uint32_t kBarOff = kXsumOff + kXsumBytes;  // TMA: a barrier a stage (weights landed)
  static constexpr size_t kSmem = kBarOff + uint32_t(ST) * 8 + 1024;
  static constexpr int kChunksPerRow = kRowBytes / 16;
  static constexpr int kWChunks = MT * 64 * kChunksPerRow / kThreadsW;  // 16-byte weight copies per thread
  static constexpr int kUnits = MT * 64 * 4 / kThreadsW;               // INT4: 32-weight conversions per thread
  static constexpr int kXCopies = TW * 8 / kThreadsW;  // 16-byte chunks of each part per thread (16 tokens a pass)
  static_assert(kBytes % 1024 == 0 && (TW == 16 || TW == 64) && kXCopies * kThreadsW == TW * 8 && (XP == 1 || XP == 2),
                "x copies");
  static_assert(!SUB || I4, "the x sums ring is INT4's");
};

// 32 INT4 weights (16 bytes of nibbles, k ascending, the low nibble first) minus `zero`, as 32 e4m3 bytes
// in k order: nibbles to f16 under the exponent of 1024 (one LOP3 per two), one f16x2 subtraction of
// 1024 + zero per two, the f16x2 -> e4m3x2 conversion, and byte permutes back to k order.
__device__ __forceinline__ void int4x32_to_e4m3(const uint4& raw, float zero, uint4& lo, uint4& hi) {
  const __half2 off = __float2half2_rn(1024.f + zero);
  const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
  uint32_t out[8];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    uint16_t e[4];  // e[j]: the e4m3 pair of nibbles j and j + 4 of word i
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const uint32_t v = ((w[i] >> (4 * j)) & 0x000f000fu) | 0x64006400u;
      const __half2 h = __hsub2(*reinterpret_cast<const __half2*>(&v), off);
      e[j] = __nv_cvt_halfraw2_to_fp8x2(*reinterpret_cast<const __half2_raw*>(&h), __NV_SATFINITE, __NV_E4M3);
    }
    const uint32_t x = uint32_t(e[0]) | (uint32_t(e[1]) << 16), y = uint32_t(e[2]) | (uint32_t(e[3]) << 16);
    out[2 * i] = __byte_perm(x, y, 0x6420);      // weights 8i .. 8i + 3
    out[2 * i + 1] = __byte_perm(x, y, 0x7531);  // weights 8i + 4 .. 8i + 7
  }
  lo = make_uint4(out[0], out[1], out[2], out[3]);
  hi = make_uint4(out[4], out[5], out[6], out[7]);
}

// 32 INT4 weights (16 bytes of nibbles, k ascending, the low nibble first) as 32 e4m3 bytes in k order, each
// nibble n the byte n: the e4m3 value n x 2^-9 (subnormal below 8, exponent field 1 from 8 on; exact). Per
// word of 8 nibbles: a = the even k's nibbles (w & 0x0f0f0f0f), b = the odd k's ((w >> 4) & 0x0f0f0f0f), and
// two byte permutes interleave them (a0 b0 a1 b1, a2 b2 a3 b3). The zero point is not applied here.
__device__ __forceinline__ void int4x32_subnormal(const uint4& raw, uint4& lo, uint4& hi) {
  const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
  uint32_t out[8];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const uint32_t a = w[i] & 0x0f0f0f0fu, b = (w[i] >> 4) & 0x0f0f0f0fu;
    out[2 * i] = __byte_perm(a, b, 0x5140);      // weights 8i .. 8i + 3
    out[2 * i + 1] = __byte_perm(a, b, 0x7362);  // weights 8i + 4 .. 8i + 7
  }
  lo = make_uint4(out[0], out[1], out[2], out[3]);
  hi = make_uint4(out[4], out[5], out[6], out[7]);
}

template <int TW>
__device__ __forceinline__ void wgmma_e4m3(float (&d)[TW / 2], uint64_t a, uint64_t b, int scale_d) {
  if constexpr (TW == 16) wgmma_m64n16k32_e4m3(d, a, b, scale_d);
  else wgmma_m64n64k32_e4m3(d, a, b, scale_d);
}

// 4 bytes global -> shared (zero-filled when !valid; src must still be a readable address).
__device__ __forceinline__ void cp4(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 4 : 0) : "memory");
}

__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

// TMA (FP8 only, DeviceContext::switches.fp8_tma, where whole 64-row tiles divide N): one thread copies a
// stage's weight rows as 128-byte x 64-row boxes of a tensor map (kernels/tma.h) that complete on the stage's
// barrier; the token tile's bytes and scales stay cp.async.
struct Fp8WeightMap {
  CUtensorMap m;
};

// NP: partial sums per k block (1: scales of 128 columns or more; 4: INT4 groups of 32 or 64, one per k step).
// TW: tokens per tile (16: decode batches and dense launches; 64: prefill-sized grouped launches, NP 1 only,
// so that a weight tile in shared memory serves 64 tokens). XP: the x parts multiplied (2: hi and lo, the bf16
// product; 1: hi alone, x rounded to e4m3 per row and 128-column block: MoeGemmParams::x_hi_only).
// SUB: INT4 nibbles as e4m3 subnormals, the zero point per partial sum (above).
template <int MT, bool SILU, bool I4, int NP, int ST, int TW, bool TMA, int XP = 2, bool SUB = false>
__global__ void __launch_bounds__(kThreadsW)
    moe_gemm_fp8_wgmma_kernel(const __grid_constant__ MoeGemmParams p, const __grid_constant__ Fp8WeightMap wmap) {
  static_assert(TW == 16 || NP == 1, "64-token tiles take one partial sum per k block");
  static_assert(!(TMA && I4), "TMA copies FP8 weight rows only");
  using S = StageW<MT, I4, ST, TW, XP, SUB>;
  constexpr int kAcc = TW / 2;  // accumulators a thread per 64-row tile
  constexpr int kStagesW = ST;
  pdl_trigger();
  pdl_wait();
  extern __shared__ unsigned char smem_raw[];
  unsigned char* smem = align_1024(smem_raw);
  const uint32_t sbase = smem_u32(smem);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, q = lane & 3;
  constexpr int kCols = SILU ? 64 : 64 * MT;
  const int f0 = int(blockIdx.x) * kCols;
  int r0, rows_total, matrix;
  if (p.dense_rows > 0) {
    r0 = int(blockIdx.y) * TW;
    rows_total = min(TW, p.dense_rows - r0);
    matrix = 0;
  } else {
    const int a = int(blockIdx.y);
    if (a >= *p.num_active) return;
    r0 = p.active_start[a];
    rows_total = p.active_start[a + 1] - r0;
    matrix = p.active_expert[a];
  }
  if (rows_total <= 0) return;
  uint64_t* wbar = reinterpret_cast<uint64_t*>(smem + S::kBarOff);  // TMA: stage s's weights landed
  uint32_t wphase = 0;                                               // TMA: bit s, the phase stage s waits for
  if constexpr (TMA) {
    if (tid == 0) {
      for (int s = 0; s < kStagesW; ++s) mbar_init(&wbar[s], 1);
      asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();
  }
  [[maybe_unused]] const int wrow0 = TMA ? matrix * int(p.w_matrix_stride / p.K) : 0;  // the matrix's row 0

  // the matrix's bytes (INT4: w_matrix_stride counts weights, two a byte), scales and zero points
  const uint8_t* Wq = static_cast<const uint8_t*>(p.w) + (I4 ? int64_t(matrix) * p.w_matrix_stride / 2
                                                             : int64_t(matrix) * p.w_matrix_stride);
  const float* Sb = p.w_scale + int64_t(matrix) * p.scale_matrix_stride;
  const float* Zb = p.w_zero ? p.w_zero + int64_t(matrix) * p.scale_matrix_stride : nullptr;
  const int64_t row_bytes = I4 ? p.K / 2 : p.K;
  // stage row sr -> output column and weight row (SiLU: gate rows, then the matching up rows)
  auto column = [&](int sr) { return SILU ? f0 + (sr & 63) : f0 + sr; };
  auto weight_row = [&](int sr) { return SILU && sr >= 64 ? p.N + f0 + (sr & 63) : f0 + sr; };
  // weight copies: chunk c % kChunksPerRow of stage row c / kChunksPerRow, c = tid + 128 i (32-bit offsets: a
  // matrix stays below 2^31 bytes); FP8 into the swizzled atoms, INT4 row after row
  const int ch = tid & 7;
  uint32_t woff[S::kWChunks], wdst[S::kWChunks];
  bool wok[S::kWChunks];
#pragma unroll
  for (int i = 0; i < S::kWChunks; ++i) {
    const int c = tid + kThreadsW * i, sr = c / S::kChunksPerRow, part = c % S::kChunksPerRow;
    wok[i] = column(sr) < p.N;
    woff[i] = uint32_t(wok[i] ? weight_row(sr) : 0) * uint32_t(row_bytes) + uint32_t(part * 16);
    wdst[i] = I4 ? uint32_t(sr * 64 + part * 16) : swz(sr, part);
  }
  // INT4 conversion units: 32 weights (k 32 j ..) of stage row u / 4, u = tid + 128 i; their zero-point rows
  [[maybe_unused]] uint32_t zoff[S::kUnits];
#pragma unroll
  for (int i = 0; i < S::kUnits; ++i) {
    const int sr = (tid + kThreadsW * i) / 4;
    zoff[i] = uint32_t((column(sr) < p.N ? weight_row(sr) : 0) >> p.scale_row_shift) * uint32_t(p.scale_ld);
  }
  // scale rows of this thread's accumulator rows (tile mi, halves h)
  uint32_t soff[MT][2];
#pragma unroll
  for (int mi = 0; mi < MT; ++mi)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int sr = mi * 64 + warp * 16 + g + 8 * h;
      soff[mi][h] = uint32_t((column(sr) < p.N ? weight_row(sr) : 0) >> p.scale_row_shift) * uint32_t(p.scale_ld);
    }
  // split-K (dense launches, gridDim.z > 1): this CTA's k blocks [kb0, kb1); the last CTA of a tile to
  // finish adds the others' partial sums (MoeGemmParams::splitk_*) and writes the tile
  const int KB = p.K / kKb, splits = int(gridDim.z);
  const int kb0 = int(blockIdx.z) * KB / splits, kb1 = (int(blockIdx.z) + 1) * KB / splits;
  const uint8_t* Xh = static_cast<const uint8_t*>(p.x_split);
  const int64_t plane = int64_t(p.x_split_rows) * p.K;  // hi plane, then lo, then the scales
  const float* Xs = reinterpret_cast<const float*>(Xh + 2 * plane);
  [[maybe_unused]] const float* Xsum = reinterpret_cast<const float*>(Xh + x_split_sums_offset(p.x_split_rows, p.K));
  auto x_row = [&](int pr) { return p.x_rows ? p.x_rows[pr] : pr; };

  for (int t0 = 0; t0 < rows_total; t0 += TW) {  // token tiles of this matrix (one at decode batches)
    const int rows = min(TW, rows_total - t0);
    // x copies: chunk ch of tokens tid / 8 + 16 c, hi and lo (two copies each)
    bool xok[S::kXCopies];
    const uint8_t* xsrc[S::kXCopies];
    uint32_t xdst[S::kXCopies];
#pragma unroll
    for (int c = 0; c < S::kXCopies; ++c) {
      const int xt = tid / 8 + 16 * c;
      xok[c] = xt < rows;
      xsrc[c] = Xh + int64_t(x_row(r0 + t0 + (xok[c] ? xt : 0))) * p.K + ch * 16;
      xdst[c] = S::kWBytes + swz(xt, ch);  // + kXBytes for lo
    }
    // x scales: thread tid < TW copies token tid's scale of each k block into the scale ring (4 bytes)
    const bool xs_ok = tid < rows;
    const float* xs_src = Xs + int64_t(x_row(r0 + t0 + (xs_ok ? tid : 0))) * KB;
    // SUB: thread tid < TW also copies token tid's 4 sums of each k block (16 bytes: K / 32 floats a row)
    [[maybe_unused]] const float* xsum_src = Xsum + int64_t(x_row(r0 + t0 + (xs_ok ? tid : 0))) * (KB * 4);
    auto issue = [&](int kb) {  // k block kb into stage kb % kStagesW (always one commit group)
      if (kb < kb1) {
        const uint32_t st = sbase + uint32_t(kb % kStagesW) * S::kBytes;
        const int k = kb * kKb;
        if constexpr (TMA) {
          if (tid == 0) {
            mbar_arrive_expect_tx(&wbar[kb % kStagesW], S::kWBytes);
#pragma unroll
            for (int mi = 0; mi < MT; ++mi)  // SiLU: the gate rows, then the matching up rows
              tma_load_2d(st + uint32_t(mi) * 8192u, &wmap.m, k,
                          wrow0 + (SILU ? mi * p.N + f0 : f0 + 64 * mi), &wbar[kb % kStagesW]);
          }
        } else {
#pragma unroll
          for (int i = 0; i < S::kWChunks; ++i) cp16(st + wdst[i], Wq + woff[i] + kb * S::kRowBytes, wok[i]);
        }
#pragma unroll
        for (int c = 0; c < S::kXCopies; ++c) {  // hi and lo of the same chunk
          cp16(st + xdst[c], xsrc[c] + k, xok[c]);
          if constexpr (XP == 2) cp16(st + xdst[c] + S::kXBytes, xsrc[c] + plane + k, xok[c]);
        }
        if (tid < TW) cp4(sbase + S::kXsOff + uint32_t((kb % kStagesW) * TW + tid) * 4u, xs_src + kb, xs_ok);
        if constexpr (SUB) {
          if (tid < TW) cp16(sbase + S::kXsumOff + uint32_t((kb % kStagesW) * TW + tid) * 16u, xsum_src + kb * 4, xs_ok);
        }
      }
      cp_commit();
    };
#pragma unroll
    for (int j = 0; j < kStagesW - 1; ++j) issue(kb0 + j);

    float acc[MT][kAcc] = {};
#pragma unroll 1
    for (int kb = kb0; kb < kb1; ++kb) {
      // this block's scales (loads in flight during the MMAs): partial pp covers k steps [4 pp / NP, ..)
      float sw[MT][NP][2];
      [[maybe_unused]] float zw[MT][NP][2];  // SUB: the zero points of those rows and partials (8: symmetric)
#pragma unroll
      for (int mi = 0; mi < MT; ++mi)
#pragma unroll
        for (int pp = 0; pp < NP; ++pp)
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const int gcol = (kb * kKb + pp * (kKb / NP)) >> p.scale_k_shift;
            sw[mi][pp][h] = __ldg(Sb + soff[mi][h] + gcol);
            if constexpr (SUB) zw[mi][pp][h] = Zb ? __ldg(Zb + soff[mi][h] + gcol) : 8.f;
          }
      cp_wait<kStagesW - 2>();
      if constexpr (!I4) fence_proxy_async();  // this thread's copies, visible to the tensor cores' reads
      __syncthreads();  // every thread's copies of block kb landed; block kb - 1's reads are done
      issue(kb + kStagesW - 1);
      if constexpr (TMA) {  // block kb's weight rows landed
        mbar_wait(&wbar[kb % kStagesW], (wphase >> (kb % kStagesW)) & 1u);
        wphase ^= 1u << (kb % kStagesW);
      }
      const uint32_t st = sbase + uint32_t(kb % kStagesW) * S::kBytes;
      const float* xs = reinterpret_cast<const float*>(smem + S::kXsOff) + (kb % kStagesW) * TW;  // block kb's x scales
      uint32_t wbase = st;  // the weight atoms the MMAs read
      if constexpr (I4) {   // nibbles -> e4m3 atoms in the conversion area
        const unsigned char* raw = smem + (kb % kStagesW) * S::kBytes;
#pragma unroll
        for (int i = 0; i < S::kUnits; ++i) {
          const int u = tid + kThreadsW * i, sr = u / 4, j = u % 4;
          uint4 lo, hi;
          if constexpr (SUB) {
            int4x32_subnormal(*reinterpret_cast<const uint4*>(raw + sr * 64 + j * 16), lo, hi);
          } else {
            const float z = Zb ? __ldg(Zb + zoff[i] + ((kb * kKb + 32 * j) >> p.scale_k_shift)) : 8.f;
            int4x32_to_e4m3(*reinterpret_cast<const uint4*>(raw + sr * 64 + j * 16), z, lo, hi);
          }
          *reinterpret_cast<uint4*>(smem + S::kConvOff + swz(sr, 2 * j)) = lo;
          *reinterpret_cast<uint4*>(smem + S::kConvOff + swz(sr, 2 * j + 1)) = hi;
        }
        fence_proxy_async();
        __syncthreads();  // the converted atoms (and this stage's x copies) complete
        wbase = sbase + S::kConvOff;
      }
      float t[MT][NP][kAcc];
      [[maybe_unused]] float xsum[NP][kAcc];  // SUB: S, each element's token's x summed over the partial's columns
      wgmma_fence();
#pragma unroll
      for (int mi = 0; mi < MT; ++mi)
#pragma unroll
        for (int s = 0; s < 4; ++s)
#pragma unroll
          for (int part = 0; part < XP; ++part)
            wgmma_e4m3<TW>(t[mi][s * NP / 4], desc_k_sw128(wbase + uint32_t(mi) * 8192u + uint32_t(s) * 32u),
                           desc_k_sw128(st + S::kWBytes + uint32_t(part) * S::kXBytes + uint32_t(s) * 32u),
                           part + s % (4 / NP));
      wgmma_commit();
      if constexpr (SUB) {  // the partials' x sums of each element's token, from the ring (while the MMAs run)
        const float* xr = reinterpret_cast<const float*>(smem + S::kXsumOff) + (kb % kStagesW) * TW * 4;
#pragma unroll
        for (int i = 0; i < kAcc; ++i) {
          const float4 v = *reinterpret_cast<const float4*>(xr + 4 * (8 * (i >> 2) + 2 * q + (i & 1)));
          if constexpr (NP == 4) {
            xsum[0][i] = v.x;
            xsum[1][i] = v.y;
            xsum[2][i] = v.z;
            xsum[3][i] = v.w;
          } else {
            xsum[0][i] = (v.x + v.y) + (v.z + v.w);
          }
        }
      }
      wgmma_wait<0>();
#pragma unroll
      for (int mi = 0; mi < MT; ++mi)
#pragma unroll
        for (int pp = 0; pp < NP; ++pp) {
          reg_fence(t[mi][pp]);
#pragma unroll
          for (int i = 0; i < kAcc; ++i) {  // token 8 (i >> 2) + 2 q + (i & 1)
            float v = t[mi][pp][i];
            if constexpr (SUB) v = fmaf(-zw[mi][pp][(i >> 1) & 1], xsum[pp][i], 512.f * v);  // 2^9 t - zero S
            acc[mi][i] = fmaf(v, sw[mi][pp][(i >> 1) & 1] * xs[8 * (i >> 2) + 2 * q + (i & 1)], acc[mi][i]);
          }
        }
    }
    cp_wait<0>();
    __syncthreads();  // the next token tile's copies reuse the stages

    if (splits > 1) {  // partials out; the last of the tile's CTAs sums them (one token tile per dense CTA)
      const int item = int(blockIdx.y) * int(gridDim.x) + int(blockIdx.x);
      float* mine = p.splitk_partials + (int64_t(item) * splits + blockIdx.z) * (MT * kAcc * kThreadsW);
#pragma unroll
      for (int mi = 0; mi < MT; ++mi)
#pragma unroll
        for (int i = 0; i < kAcc; ++i) mine[(mi * kAcc + i) * kThreadsW + tid] = acc[mi][i];
      __threadfence();
      __syncthreads();
      __shared__ int last;
      if (tid == 0) last = atomicAdd(p.splitk_counters + item, 1) == splits - 1;
      __syncthreads();
      if (!last) return;
      __threadfence();
      for (int z = 0; z < splits; ++z) {
        if (z == int(blockIdx.z)) continue;
        const float* other = p.splitk_partials + (int64_t(item) * splits + z) * (MT * kAcc * kThreadsW);
#pragma unroll
        for (int mi = 0; mi < MT; ++mi)
#pragma unroll
          for (int i = 0; i < kAcc; ++i) acc[mi][i] += __ldcg(other + (mi * kAcc + i) * kThreadsW + tid);
      }
      if (tid == 0) p.splitk_counters[item] = 0;  // ready for the next launch
    }

    bf16* Y = static_cast<bf16*>(p.y);
#pragma unroll
    for (int i = 0; i < kAcc; ++i) {
      const int tk = 8 * (i >> 2) + 2 * q + (i & 1);
      if (tk >= rows) continue;
      bf16* yrow = Y + int64_t(r0 + t0 + tk) * p.ldy;
      const int rr = warp * 16 + g + 8 * ((i >> 1) & 1);
      if constexpr (SILU) {
        const int col = f0 + rr;
        if (col < p.N) yrow[col] = __float2bfloat16_rn(siluf_(acc[0][i]) * acc[1][i]);
      } else {
#pragma unroll
        for (int mi = 0; mi < MT; ++mi) {
          const int col = f0 + mi * 64 + rr;
          if (col >= p.N) continue;
          float v = acc[mi][i];
          if (p.accumulate) v += __bfloat162float(yrow[col]);
          yrow[col] = __float2bfloat16_rn(v);
        }
      }
    }
  }
}

// The split: one thread per 8 values, 16 threads per 128-value k block (their amax by shuffles).
__global__ void x_split_kernel(XSplitParams p) {
  pdl_trigger();
  pdl_wait();
  const int per_row = p.K / 8;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;  // chunk of 8 values
  const bool ok = i < int64_t(p.rows) * per_row;  // whole 16-thread groups share `ok` (per_row % 16 == 0)
  const int64_t r = ok ? i / per_row : 0;
  const int c = ok ? int(i % per_row) : 0;
  float v[8] = {};
  if (ok) {
    const uint4 raw = *reinterpret_cast<const uint4*>(static_cast<const bf16*>(p.x) + r * p.ldx + c * 8);
    const bf16* e = reinterpret_cast<const bf16*>(&raw);
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] = __bfloat162float(e[j]);
  }
  static_assert(kKb == 128, "x_split_chunk_store's blocks are 128 columns");
  x_split_chunk_store(v, ok, static_cast<uint8_t*>(p.out), p.rows, p.K, r, c);
}

template <int MT, bool SILU, bool I4, int NP, int ST, int TW, int XP, bool SUB = false>
void launch_t(const MoeGemmParams& p, int tiles, const DeviceContext& ctx, int splits = 1) {
  constexpr int kCols = SILU ? 64 : 64 * MT;
  const dim3 grid(ceil_div(p.N, kCols), unsigned(tiles), unsigned(splits));
  constexpr size_t kSmem = StageW<MT, I4, ST, TW, XP, SUB>::kSmem;
  Fp8WeightMap m{};
  if constexpr (!I4) {
    // TMA: whole 64-row tiles (a box cannot stop at N), every matrix the same number of rows
    if (ctx.switches.fp8_tma && ctx.tensor_map_encoder && p.N % kCols == 0 && p.w_matrix_stride % p.K == 0 &&
        reinterpret_cast<uintptr_t>(p.w) % 16 == 0) {
      m.m = rows_tensor_map(ctx.tensor_map_encoder, {.base = p.w,
                                                     .type = CU_TENSOR_MAP_DATA_TYPE_UINT8,
                                                     .elem_bytes = 1,
                                                     .cols = p.K,
                                                     .ld = p.K,
                                                     .box_rows = 64,
                                                     .what = "FP8 weights"});
      return launch_pdl(moe_gemm_fp8_wgmma_kernel<MT, SILU, I4, NP, ST, TW, true, XP>, grid, kThreadsW, kSmem, ctx, p,
                        m);
    }
  }
  launch_pdl(moe_gemm_fp8_wgmma_kernel<MT, SILU, I4, NP, ST, TW, false, XP, SUB>, grid, kThreadsW, kSmem, ctx, p, m);
}

template <bool I4, int NP, int ST, int TW, int XP, bool SUB = false>
void launch_shape(const MoeGemmParams& p, int tiles, const DeviceContext& ctx) {
  if (p.silu_mul) return launch_t<2, true, I4, NP, ST, TW, XP, SUB>(p, tiles, ctx);
  // dense launches of fewer 64-row blocks than SMs: K split so that the grid fills the GPU twice over
  const int64_t blocks64 = int64_t(ceil_div(p.N, 64)) * tiles;
  if (ctx.switches.fp8_split_k && p.dense_rows > 0 && !p.silu_mul && p.splitk_partials &&
      blocks64 < ctx.num_sms()) {
    const int KB = p.K / kKb;
    int splits = int(std::min<int64_t>(KB, 2 * ctx.num_sms() / blocks64));
    splits = int(std::min<int64_t>(splits, p.splitk_capacity / (blocks64 * (TW / 2) * kThreadsW)));
    if (splits > 1 && blocks64 <= p.splitk_items)
      return launch_t<1, false, I4, NP, ST, TW, XP, SUB>(p, tiles, ctx, splits);
  }
  // 128-row blocks, or 64 where that leaves fewer blocks than SMs (small dense shapes), and at dense 64-token
  // tiles (three CTAs an SM instead of two, the grid's tail shorter: FP8 batch-100 step 17.75 -> 17.63 ms,
  // session 20, docs/PERF.md)
  if ((TW == 64 && p.dense_rows > 0) || int64_t(ceil_div(p.N, 128)) * tiles < ctx.num_sms())
    return launch_t<1, false, I4, NP, ST, TW, XP, SUB>(p, tiles, ctx);
  launch_t<2, false, I4, NP, ST, TW, XP, SUB>(p, tiles, ctx);
}

template <bool I4, int NP, int TW, int XP = 2>
void launch_stages(const MoeGemmParams& p, int tiles, const DeviceContext& ctx) {
  if constexpr (I4) {
    if (ctx.switches.int4_subnormal) {
      if (ctx.switches.fp8_wgmma_stages == 3) return launch_shape<I4, NP, 3, TW, XP, true>(p, tiles, ctx);
      return launch_shape<I4, NP, 4, TW, XP, true>(p, tiles, ctx);
    }
  }
  if (ctx.switches.fp8_wgmma_stages == 3) return launch_shape<I4, NP, 3, TW, XP>(p, tiles, ctx);
  launch_shape<I4, NP, 4, TW, XP>(p, tiles, ctx);
}

template <bool I4, int NP, int ST, int TW, bool TMA, int XP, bool SUB = false> void configure_shapes_t() {
  using S2 = StageW<2, I4, ST, TW, XP, SUB>;
  using S1 = StageW<1, I4, ST, TW, XP, SUB>;
  set_max_dynamic_smem(moe_gemm_fp8_wgmma_kernel<2, true, I4, NP, ST, TW, TMA, XP, SUB>, S2::kSmem);
  set_max_dynamic_smem(moe_gemm_fp8_wgmma_kernel<2, false, I4, NP, ST, TW, TMA, XP, SUB>, S2::kSmem);
  set_max_dynamic_smem(moe_gemm_fp8_wgmma_kernel<1, false, I4, NP, ST, TW, TMA, XP, SUB>, S1::kSmem);
}
template <bool I4, int NP, int ST, int TW, int XP = 2> void configure_shapes() {
  configure_shapes_t<I4, NP, ST, TW, false, XP>();
  if constexpr (!I4) configure_shapes_t<I4, NP, ST, TW, true, XP>();
  if constexpr (I4) configure_shapes_t<I4, NP, ST, TW, false, XP, true>();  // switches.int4_subnormal
}

}  // namespace

size_t x_split_bytes(int64_t rows, int64_t K) { return size_t(x_split_sums_offset(rows, K) + rows * (K / 32) * 4); }

void run_x_split(const XSplitParams& p, const DeviceContext& ctx) {
  DS_GPU_REQUIRE(p.K % kKb == 0 && p.ldx % 8 == 0, "run_x_split: K must be a multiple of 128 and ldx of 8");
  if (p.rows == 0) return;
  const int64_t chunks = int64_t(p.rows) * (p.K / 8);
  launch_pdl(x_split_kernel, dim3(unsigned(ceil_div(chunks, int64_t(256)))), 256, 0, ctx, p);
}

bool moe_gemm_fp8_wgmma_applies(const MoeGemmParams& p, const DeviceContext& ctx) {
  // FP8: scale blocks at least 128 columns wide (one partial sum per k block); INT4: groups of 32 or more
  // 64-token tiles: one partial per k block (groups of 128 or more); grouped launches, and dense ones (a
  // weight tile in shared memory then serves up to 64 of the rows instead of 16)
  const bool tile_ok = p.tile_tokens == 16 || (p.tile_tokens == 64 && p.scale_k_shift >= 7);
  return ctx.switches.fp8_xsplit && p.x_split && p.x_split_rows > 0 && p.w_scale && tile_ok &&
         p.scale_k_shift >= (p.w_int4 ? 5 : 7) && p.K % kKb == 0 && p.ldx % 8 == 0 && ctx.info.sm_major == 9 &&
         ctx.info.smem_per_block_optin >= StageW<2, false, 4, 64>::kSmem && (p.dense_rows > 0 || p.max_active > 0);
}

void launch_moe_gemm_fp8_wgmma(const MoeGemmParams& p, const DeviceContext& ctx) {
  if (!p.x_split_ready)
    run_x_split(XSplitParams{.x = p.x, .ldx = p.ldx, .rows = p.x_split_rows, .K = p.K, .out = p.x_split}, ctx);
  const int tiles = p.dense_rows > 0 ? int(ceil_div(p.dense_rows, p.tile_tokens == 64 ? 64 : 16)) : p.max_active;
  if (p.tile_tokens == 64) {  // applies() admits these for NP 1 only
    if (p.w_int4) return launch_stages<true, 1, 64>(p, tiles, ctx);  // (W4A16: hi and lo always)
    if (p.x_hi_only) return launch_stages<false, 1, 64, 1>(p, tiles, ctx);
    return launch_stages<false, 1, 64>(p, tiles, ctx);
  }
  if (!p.w_int4) return launch_stages<false, 1, 16>(p, tiles, ctx);
  if (p.scale_k_shift >= 7) return launch_stages<true, 1, 16>(p, tiles, ctx);
  launch_stages<true, 4, 16>(p, tiles, ctx);
}

void configure_moe_gemm_fp8_wgmma(const DeviceContext& ctx) {
  if (ctx.info.sm_major != 9 || ctx.info.smem_per_block_optin < StageW<2, false, 4, 64>::kSmem) return;
  configure_shapes<false, 1, 4, 16>();
  configure_shapes<true, 1, 4, 16>();
  configure_shapes<true, 4, 4, 16>();
  configure_shapes<false, 1, 3, 16>();
  configure_shapes<true, 1, 3, 16>();
  configure_shapes<true, 4, 3, 16>();
  configure_shapes<false, 1, 4, 64>();
  configure_shapes<true, 1, 4, 64>();
  configure_shapes<false, 1, 3, 64>();
  configure_shapes<true, 1, 3, 64>();
  configure_shapes<false, 1, 4, 64, 1>();
  configure_shapes<false, 1, 3, 64, 1>();
}

}  // namespace ds::gpu
