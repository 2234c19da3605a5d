// FP8 grouped and dense GEMMs of decode-sized token tiles on tensor cores, the weights converted straight
// into mma.sync fragments (see moe_gemm_frag.h for why).
//
// A block is 4 warps and stages, per 64-wide k block, the raw e4m3 bytes of its 64 x MT weight rows (SiLU-mul:
// 64 gate rows and the 64 matching up rows) and the bf16 k block of its token tile's x rows in shared memory
// (cp.async, kStagesF deep, one barrier per k block). Each warp owns 16 x MT of those rows. For one m16n8k16
// tile, the thread in lane (g = lane / 4, q = lane % 4) reads bytes [16q, 16q + 16) of weight rows g and g + 8
// and elements [16q, 16q + 16) of x row (token) g: the k order inside the block is permuted the same way for
// both operands (MMA step s takes physical k 16q + 4s .. 16q + 4s + 3 where the fragment layout says 2q,
// 2q + 1, 2q + 8, 2q + 9), so every fragment register is one 32-bit word of a 16-byte shared load and no bf16
// copy of the weights is ever written (the staged tile kernel writes one and reads it back: three passes of
// the weights through shared memory, which bound it: docs/PERF.md, session 8). Weight rows are 64 bytes
// apart (the 16-byte loads of a quarter warp cover 128 distinct bytes), x rows 144 (72 bf16).
//
// e4m3 to bf16 on the integer pipe: a byte's sign to bit 15 and its exponent and mantissa to bits 10..4 is the
// value times 2^-120, exactly (subnormals too). x is scaled by 2^64 (exact) so that the products stay normal
// fp32; each k block's partial sums are multiplied by the block's scale times 2^56.
#include "cuda/kernels/moe_gemm_frag.h"

#include <algorithm>

#include "cuda/kernels/common.cuh"

namespace ds::gpu {
namespace {

constexpr int kWarpsF = 4, kStagesF = 4, kKb = 64, kXLd = 72;  // x row stride in the stage (bf16)

__device__ __forceinline__ void cp_async16_zfill(void* smem, const void* gmem, bool valid) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void wait_groups() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// The e4m3 bytes (b0, b1) and (b2, b3) of w as bf16 pairs, each the value times 2^-120.
__device__ __forceinline__ void e4m3x4_to_bf16x2(uint32_t w, uint32_t& lo, uint32_t& hi) {
  const uint32_t a = __byte_perm(w, 0u, 0x1404), b = __byte_perm(w, 0u, 0x3424);  // bytes to bits 15..8, 31..24
  lo = (a & 0x80008000u) | ((a >> 4) & 0x07f007f0u);
  hi = (b & 0x80008000u) | ((b >> 4) & 0x07f007f0u);
}

__device__ __forceinline__ uint32_t bf16x2_times_2p64(uint32_t v) {
  const __nv_bfloat162 r = __hmul2(*reinterpret_cast<const __nv_bfloat162*>(&v), __floats2bfloat162_rn(0x1p64f, 0x1p64f));
  return *reinterpret_cast<const uint32_t*>(&r);
}

__device__ __forceinline__ void mma16816(float* d, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t word(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

// Shared memory of one stage: the weight rows' raw bytes [64 * MT rows][64], then x [8 * NI rows][kXLd] bf16.
template <int MT, int NI> struct StageF {
  static constexpr int kRows = 64 * MT, kTokens = 8 * NI;
  static constexpr int kWBytes = kRows * kKb, kBytes = kWBytes + kTokens * kXLd * 2;
  static constexpr int kWChunks = kRows * kKb / 16 / (kWarpsF * 32);  // 16-byte weight copies per thread
  static constexpr size_t kSmem = size_t(kStagesF) * kBytes;
  static_assert(kRows * kKb / 16 % (kWarpsF * 32) == 0 && kTokens * 8 <= kWarpsF * 32, "copies divide over the block");
};

template <int MT, int NI, bool SILU>
__global__ void __launch_bounds__(kWarpsF * 32) moe_gemm_frag_kernel(MoeGemmParams p) {
  using S = StageF<MT, NI>;
  constexpr int BN = 8 * NI;
  constexpr int kCols = SILU ? 64 : 64 * MT;  // output columns of the block
  extern __shared__ __align__(16) unsigned char smem[];
  pdl_trigger();
  pdl_wait();
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, q = lane & 3;
  const int f0 = int(blockIdx.x) * kCols;

  int r0, rows_total, expert;
  if (p.dense_rows > 0) {
    r0 = int(blockIdx.y) * BN;
    rows_total = min(BN, p.dense_rows - r0);
    expert = 0;
  } else {
    const int a = int(blockIdx.y);
    if (a >= *p.num_active) return;
    r0 = p.active_start[a];
    rows_total = p.active_start[a + 1] - r0;
    expert = p.active_expert[a];
  }
  if (rows_total <= 0) return;

  const uint8_t* Wq = static_cast<const uint8_t*>(p.w) + int64_t(expert) * p.w_matrix_stride;
  const float* Sb = p.w_scale + int64_t(expert) * p.scale_matrix_stride;
  // stage row sr -> output column and weight row (SiLU: gate rows, then the matching up rows)
  auto column = [&](int sr) { return SILU ? f0 + (sr & 63) : f0 + sr; };
  auto weight_row = [&](int sr) { return SILU && sr >= 64 ? p.N + f0 + (sr & 63) : f0 + sr; };
  // this thread's copies of every k block: weight chunks, then (threads < 8 * BN) one x chunk
  const uint8_t* wsrc[S::kWChunks];
  int wdst[S::kWChunks];
  bool wok[S::kWChunks];
#pragma unroll
  for (int i = 0; i < S::kWChunks; ++i) {
    const int c = tid + i * kWarpsF * 32, sr = c / 4, part = c % 4;
    wok[i] = column(sr) < p.N;
    wsrc[i] = Wq + int64_t(wok[i] ? weight_row(sr) : 0) * p.K + part * 16;
    wdst[i] = sr * kKb + part * 16;
  }
  // this warp's fragment rows (stage rows) and their scale rows: tile mi, rows g and g + 8
  int frow[MT];
  const float* srow[MT][2];
#pragma unroll
  for (int mi = 0; mi < MT; ++mi) {
    frow[mi] = SILU ? mi * 64 + warp * 16 : warp * 16 * MT + mi * 16;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int sr = frow[mi] + g + 8 * h;
      srow[mi][h] = Sb + int64_t((column(sr) < p.N ? weight_row(sr) : 0) >> p.scale_row_shift) * p.scale_ld;
    }
  }
  const bf16* X = static_cast<const bf16*>(p.x);
  const int KB = p.K / kKb;

  for (int t0 = 0; t0 < rows_total; t0 += BN) {  // token tiles of this expert (one at decode batches)
    const int rows = min(BN, rows_total - t0);
    const int xn = tid / 8, xpart = tid % 8;  // this thread's x chunk: token row xn, elements 8 * xpart..
    const bool xact = xn < BN, xok = xn < rows;
    const int pr = r0 + t0 + (xok ? xn : 0);
    const bf16* xsrc = X + (p.x_rows ? int64_t(p.x_rows[pr]) : int64_t(pr)) * p.ldx + xpart * 8;
    auto issue = [&](int kb) {  // k block kb into stage kb % kStagesF (always one commit group)
      if (kb < KB) {
        unsigned char* st = smem + (kb % kStagesF) * S::kBytes;
        const int k = kb * kKb;
#pragma unroll
        for (int i = 0; i < S::kWChunks; ++i) cp_async16_zfill(st + wdst[i], wsrc[i] + k, wok[i]);
        if (xact) cp_async16_zfill(st + S::kWBytes + (xn * kXLd + xpart * 8) * 2, xsrc + k, xok);
      }
      commit();
    };
#pragma unroll
    for (int j = 0; j < kStagesF - 1; ++j) issue(j);

    float acc[MT][NI][4] = {};

    for (int kb = 0; kb < KB; ++kb) {
      wait_groups<kStagesF - 2>();
      __syncthreads();         // stage kb landed for every thread; every warp is done with stage kb - 1
      issue(kb + kStagesF - 1);  // into the stage read at kb - 1
      const unsigned char* st = smem + (kb % kStagesF) * S::kBytes;
      const bf16* xs = reinterpret_cast<const bf16*>(st + S::kWBytes);
      float s[MT][2];
#pragma unroll
      for (int mi = 0; mi < MT; ++mi)
#pragma unroll
        for (int h = 0; h < 2; ++h) s[mi][h] = __ldg(srow[mi][h] + ((kb * kKb) >> p.scale_k_shift)) * 0x1p56f;
      uint4 wa[MT][2], xv[NI][2];
#pragma unroll
      for (int mi = 0; mi < MT; ++mi)
#pragma unroll
        for (int h = 0; h < 2; ++h)
          wa[mi][h] = *reinterpret_cast<const uint4*>(st + (frow[mi] + g + 8 * h) * kKb + q * 16);
#pragma unroll
      for (int ni = 0; ni < NI; ++ni)
#pragma unroll
        for (int pc = 0; pc < 2; ++pc)
          xv[ni][pc] = *reinterpret_cast<const uint4*>(xs + (ni * 8 + g) * kXLd + q * 16 + pc * 8);
      float t[MT][NI][4] = {};  // this k block's sums, scaled into acc below
#pragma unroll
      for (int st4 = 0; st4 < 4; ++st4) {
        uint32_t b0[NI], b1[NI];
#pragma unroll
        for (int ni = 0; ni < NI; ++ni) {
          const uint4& v = xv[ni][st4 >> 1];
          b0[ni] = bf16x2_times_2p64(word(v, 2 * (st4 & 1)));
          b1[ni] = bf16x2_times_2p64(word(v, 2 * (st4 & 1) + 1));
        }
#pragma unroll
        for (int mi = 0; mi < MT; ++mi) {
          uint32_t lo0, hi0, lo1, hi1;
          e4m3x4_to_bf16x2(word(wa[mi][0], st4), lo0, hi0);
          e4m3x4_to_bf16x2(word(wa[mi][1], st4), lo1, hi1);
#pragma unroll
          for (int ni = 0; ni < NI; ++ni) mma16816(t[mi][ni], lo0, lo1, hi0, hi1, b0[ni], b1[ni]);
        }
      }
#pragma unroll
      for (int mi = 0; mi < MT; ++mi)
#pragma unroll
        for (int ni = 0; ni < NI; ++ni) {
          acc[mi][ni][0] = fmaf(t[mi][ni][0], s[mi][0], acc[mi][ni][0]);
          acc[mi][ni][1] = fmaf(t[mi][ni][1], s[mi][0], acc[mi][ni][1]);
          acc[mi][ni][2] = fmaf(t[mi][ni][2], s[mi][1], acc[mi][ni][2]);
          acc[mi][ni][3] = fmaf(t[mi][ni][3], s[mi][1], acc[mi][ni][3]);
        }
    }
    wait_groups<0>();
    __syncthreads();  // the next token tile's copies reuse the stages

    bf16* Y = static_cast<bf16*>(p.y);
#pragma unroll
    for (int ni = 0; ni < NI; ++ni)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int tk = ni * 8 + 2 * q + (e & 1);
        if (tk >= rows) continue;
        bf16* yrow = Y + int64_t(r0 + t0 + tk) * p.ldy;
        if constexpr (SILU) {
          const int col = f0 + warp * 16 + g + (e >= 2 ? 8 : 0);
          if (col < p.N) yrow[col] = __float2bfloat16_rn(siluf_(acc[0][ni][e]) * acc[1][ni][e]);
        } else {
#pragma unroll
          for (int mi = 0; mi < MT; ++mi) {
            const int col = f0 + warp * 16 * MT + mi * 16 + g + (e >= 2 ? 8 : 0);
            if (col >= p.N) continue;
            float v = acc[mi][ni][e];
            if (p.accumulate) v += __bfloat162float(yrow[col]);
            yrow[col] = __float2bfloat16_rn(v);
          }
        }
      }
  }
}

template <int MT, int NI, bool SILU> void launch_t(const MoeGemmParams& p, int tiles, const DeviceContext& ctx) {
  constexpr int kCols = SILU ? 64 : 64 * MT;
  const dim3 grid(ceil_div(p.N, kCols), unsigned(tiles));
  launch_pdl(moe_gemm_frag_kernel<MT, NI, SILU>, grid, kWarpsF * 32, StageF<MT, NI>::kSmem, ctx, p);
}

template <int NI> void launch_ni(const MoeGemmParams& p, int tiles, const DeviceContext& ctx) {
  if (p.silu_mul) return launch_t<2, NI, true>(p, tiles, ctx);
  // 128-row blocks, or 64 where that leaves fewer blocks than SMs (small dense shapes)
  if (int64_t(ceil_div(p.N, 128)) * tiles < ctx.num_sms()) return launch_t<1, NI, false>(p, tiles, ctx);
  launch_t<2, NI, false>(p, tiles, ctx);
}

}  // namespace

bool moe_gemm_frag_applies(const MoeGemmParams& p, const DeviceContext& ctx) {
  return ctx.switches.fp8_frag != 0 && p.w_scale && p.tile_tokens == 16 && p.scale_k_shift >= 6 &&
         p.K % kKb == 0 && p.ldx % 8 == 0 && (p.dense_rows > 0 || p.max_active > 0);
}

void launch_moe_gemm_frag(const MoeGemmParams& p, const DeviceContext& ctx) {
  int ni = ctx.switches.fp8_frag == 8 ? 1 : ctx.switches.fp8_frag == 16 ? 2 : 0;
  if (ni == 0) {  // by the tokens a tile sees: dense rows, or the mean rows of an active expert
    const int mean = p.dense_rows > 0 ? p.dense_rows : p.max_rows / std::max(1, p.max_active);
    ni = mean > (p.dense_rows > 0 ? 8 : 4) ? 2 : 1;
  }
  const int tiles = p.dense_rows > 0 ? int(ceil_div(p.dense_rows, 8 * ni)) : p.max_active;
  if (ni == 1) launch_ni<1>(p, tiles, ctx);
  else launch_ni<2>(p, tiles, ctx);
}

void configure_moe_gemm_frag() {
  auto one = [&]<int NI>() {
    set_max_dynamic_smem(moe_gemm_frag_kernel<2, NI, true>, StageF<2, NI>::kSmem);
    set_max_dynamic_smem(moe_gemm_frag_kernel<2, NI, false>, StageF<2, NI>::kSmem);
    set_max_dynamic_smem(moe_gemm_frag_kernel<1, NI, false>, StageF<1, NI>::kSmem);
  };
  one.template operator()<1>();
  one.template operator()<2>();
}

}  // namespace ds::gpu
