// FP8 grouped and dense GEMMs of decode-sized token tiles on tensor cores, the weights converted straight
// into mma.sync fragments (see moe_gemm_frag.h for why).
//
// A block is 4 warps. Warps split the output columns into row groups of 16 x MT weight rows (SiLU-mul: 16
// gate rows and the 16 matching up rows) and, kw to a group, the K range in k blocks of 128 (a weight row
// is read 128 bytes at a time: at 64 bytes per row and step the FP8 and 32-wide bf16 tile kernels streamed
// at 41-58% of the bandwidth, the 128-byte bf16 tiles at 90%). Each k block is two 64-wide halves; for one
// m16n8k16 tile and half, the thread in lane (g = lane / 4, q = lane % 4) copies bytes [16q, 16q + 16) of
// weight rows g and g + 8, and elements [16q, 16q + 16) of x row (token) g: the k order inside a half is
// permuted the same way for both operands (MMA step s takes physical k 16q + 4s .. 16q + 4s + 3 where the
// fragment layout says 2q, 2q + 1, 2q + 8, 2q + 9), so every fragment register is one 32-bit word of what
// the thread copied and nothing is exchanged between threads.
//
// e4m3 to bf16 on the integer pipe: a byte's sign to bit 15 and its exponent and mantissa to bits 10..4 is the
// value times 2^-120, exactly (subnormals too). x is scaled by 2^64 (exact) so that the products stay normal
// fp32; each k block's partial sums are multiplied by the block's scale times 2^56.
#include "cuda/kernels/moe_gemm_frag.h"

#include <algorithm>

#include "cuda/kernels/common.cuh"

namespace ds::gpu {
namespace {

constexpr int kWarpsF = 4, kStagesR = 3, kKb = 128;

__device__ __forceinline__ void cp_async16_zfill(void* smem, const void* gmem, bool valid) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async4(void* smem, const void* gmem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(s), "l"(gmem));
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

// Ring stage of one thread: C 16-byte chunks, weights [mi][row g / g + 8][half] then x [ni][half][16-byte
// piece], then the scales [mi][row][half]; stored [chunk][lane] so that a warp's accesses are contiguous.
template <int MT, int NI> struct Ring {
  static constexpr int CW = 4 * MT, C = CW + 4 * NI, SC = 4 * MT;
  static constexpr int kStageBytes = C * 32 * 16 + SC * 32 * 4;
  static constexpr size_t kSmem = size_t(kWarpsF) * kStagesR * kStageBytes;
};

template <int MT, int NI, bool SILU>
__global__ void __launch_bounds__(kWarpsF * 32) moe_gemm_frag_kernel(MoeGemmParams p, int kw) {
  using R = Ring<MT, NI>;
  constexpr int BN = 8 * NI;
  constexpr int kWarpCols = SILU ? 16 : 16 * MT;  // output columns per row group
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ float red[kWarpsF][MT][NI][4][32];
  pdl_trigger();
  pdl_wait();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
  const int rw = kWarpsF / kw, rg = warp / kw, ks = warp % kw;
  const int f0 = (int(blockIdx.x) * rw + rg) * kWarpCols;

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

  // this thread's weight rows: g and g + 8 of each m16 tile (SiLU: tile 0 gate rows, tile 1 up rows)
  const uint8_t* Wq = static_cast<const uint8_t*>(p.w) + int64_t(expert) * p.w_matrix_stride;
  const float* Sb = p.w_scale + int64_t(expert) * p.scale_matrix_stride;
  const uint8_t* wsrc[MT][2];  // [m16 tile][row g / g + 8]
  const float* ssrc[MT][2];
  bool wok[MT][2];
#pragma unroll
  for (int mi = 0; mi < MT; ++mi)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int col = SILU ? f0 + g + 8 * h : f0 + mi * 16 + g + 8 * h;  // output column
      const int row = SILU && mi == 1 ? p.N + col : col;                 // weight row
      wok[mi][h] = col < p.N;
      const int rr = wok[mi][h] ? row : 0;
      wsrc[mi][h] = Wq + int64_t(rr) * p.K + q * 16;
      ssrc[mi][h] = Sb + int64_t(rr >> p.scale_row_shift) * p.scale_ld;
    }
  const int KB = p.K / kKb, kb0 = ks * KB / kw, nkb = (ks + 1) * KB / kw - kb0;
  unsigned char* my = smem + size_t(warp) * kStagesR * R::kStageBytes;
  const bf16* X = static_cast<const bf16*>(p.x);

  for (int t0 = 0; t0 < rows_total; t0 += BN) {  // token tiles of this expert (one at decode batches)
    const int rows = min(BN, rows_total - t0);
    const bf16* xsrc[NI];
    bool xok[NI];
#pragma unroll
    for (int ni = 0; ni < NI; ++ni) {
      const int tk = ni * 8 + g;
      xok[ni] = tk < rows;
      const int pr = r0 + t0 + (xok[ni] ? tk : 0);
      const int64_t xr = p.x_rows ? p.x_rows[pr] : pr;
      xsrc[ni] = X + xr * p.ldx + q * 16;
    }
    auto issue = [&](int j) {  // k block kb0 + j into stage j % kStagesR (always one commit group)
      if (j < nkb) {
        unsigned char* st = my + (j % kStagesR) * R::kStageBytes;
        uint4* ch = reinterpret_cast<uint4*>(st);
        float* sc = reinterpret_cast<float*>(st + R::C * 32 * 16);
        const int k = (kb0 + j) * kKb;
#pragma unroll
        for (int mi = 0; mi < MT; ++mi)
#pragma unroll
          for (int h = 0; h < 2; ++h)
#pragma unroll
            for (int hf = 0; hf < 2; ++hf) {
              const int c = (2 * mi + h) * 2 + hf;
              cp_async16_zfill(ch + c * 32 + lane, wsrc[mi][h] + k + 64 * hf, wok[mi][h]);
              cp_async4(sc + c * 32 + lane, ssrc[mi][h] + ((k + 64 * hf) >> p.scale_k_shift));
            }
#pragma unroll
        for (int ni = 0; ni < NI; ++ni)
#pragma unroll
          for (int hf = 0; hf < 2; ++hf)
#pragma unroll
            for (int pc = 0; pc < 2; ++pc)
              cp_async16_zfill(ch + (R::CW + (2 * ni + hf) * 2 + pc) * 32 + lane, xsrc[ni] + k + 64 * hf + 8 * pc, xok[ni]);
      }
      commit();
    };
#pragma unroll
    for (int j = 0; j < kStagesR - 1; ++j) issue(j);

    float acc[MT][NI][4];
#pragma unroll
    for (int mi = 0; mi < MT; ++mi)
#pragma unroll
      for (int ni = 0; ni < NI; ++ni)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[mi][ni][e] = 0.f;

    for (int j = 0; j < nkb; ++j) {
      issue(j + kStagesR - 1);  // into the stage read at j - 1 (this thread's own entries)
      wait_groups<kStagesR - 1>();
      const unsigned char* st = my + (j % kStagesR) * R::kStageBytes;
      const uint4* ch = reinterpret_cast<const uint4*>(st);
      const float* sc = reinterpret_cast<const float*>(st + R::C * 32 * 16);
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {  // the two 64-wide halves of the k block
        uint4 wa[MT][2], xv[NI][2];
        float s[MT][2];
#pragma unroll
        for (int mi = 0; mi < MT; ++mi)
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const int c = (2 * mi + h) * 2 + hf;
            wa[mi][h] = ch[c * 32 + lane];
            s[mi][h] = sc[c * 32 + lane] * 0x1p56f;
          }
#pragma unroll
        for (int ni = 0; ni < NI; ++ni)
#pragma unroll
          for (int pc = 0; pc < 2; ++pc) xv[ni][pc] = ch[(R::CW + (2 * ni + hf) * 2 + pc) * 32 + lane];
        float t[MT][NI][4];
#pragma unroll
        for (int mi = 0; mi < MT; ++mi)
#pragma unroll
          for (int ni = 0; ni < NI; ++ni)
#pragma unroll
            for (int e = 0; e < 4; ++e) t[mi][ni][e] = 0.f;
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
    }
    wait_groups<0>();

    // the kw warps of a row group add their K ranges; the first writes
    if (kw > 1) {
#pragma unroll
      for (int mi = 0; mi < MT; ++mi)
#pragma unroll
        for (int ni = 0; ni < NI; ++ni)
#pragma unroll
          for (int e = 0; e < 4; ++e) red[warp][mi][ni][e][lane] = acc[mi][ni][e];
      __syncthreads();
      if (ks == 0) {
        for (int o = 1; o < kw; ++o)
#pragma unroll
          for (int mi = 0; mi < MT; ++mi)
#pragma unroll
            for (int ni = 0; ni < NI; ++ni)
#pragma unroll
              for (int e = 0; e < 4; ++e) acc[mi][ni][e] += red[warp + o][mi][ni][e][lane];
      }
      __syncthreads();  // red is reused by the next token tile
    }
    if (ks == 0) {
      bf16* Y = static_cast<bf16*>(p.y);
#pragma unroll
      for (int ni = 0; ni < NI; ++ni)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int tk = ni * 8 + 2 * q + (e & 1);
          if (tk >= rows) continue;
          bf16* yrow = Y + int64_t(r0 + t0 + tk) * p.ldy;
          if constexpr (SILU) {
            const int col = f0 + g + (e >= 2 ? 8 : 0);
            if (col < p.N) yrow[col] = __float2bfloat16_rn(siluf_(acc[0][ni][e]) * acc[1][ni][e]);
          } else {
#pragma unroll
            for (int mi = 0; mi < MT; ++mi) {
              const int col = f0 + mi * 16 + g + (e >= 2 ? 8 : 0);
              if (col >= p.N) continue;
              float v = acc[mi][ni][e];
              if (p.accumulate) v += __bfloat162float(yrow[col]);
              yrow[col] = __float2bfloat16_rn(v);
            }
          }
        }
    }
  }
}

template <int MT, int NI, bool SILU> void launch_t(const MoeGemmParams& p, int kw, int tiles, const DeviceContext& ctx) {
  constexpr int kWarpCols = SILU ? 16 : 16 * MT;
  const int cols = (kWarpsF / kw) * kWarpCols;
  const dim3 grid(ceil_div(p.N, cols), unsigned(tiles));
  launch_pdl(moe_gemm_frag_kernel<MT, NI, SILU>, grid, kWarpsF * 32, Ring<MT, NI>::kSmem, ctx, p, kw);
}

template <int NI> void launch_ni(const MoeGemmParams& p, int tiles, const DeviceContext& ctx) {
  const int num_sms = ctx.num_sms();
  // warps per row group splitting K: the fewest that give two blocks per SM
  auto blocks = [&](int mt, int kw) {
    const int cols = (kWarpsF / kw) * (p.silu_mul ? 16 : 16 * mt);
    return int64_t(ceil_div(p.N, cols)) * tiles;
  };
  const int KB = p.K / kKb;
  int kw = 1;
  while (kw < kWarpsF && blocks(2, kw) < 2 * num_sms && KB / (2 * kw) >= 2) kw *= 2;
  if (p.silu_mul) return launch_t<2, NI, true>(p, kw, tiles, ctx);
  if (blocks(2, kw) < num_sms) return launch_t<1, NI, false>(p, kw, tiles, ctx);  // small dense shapes
  launch_t<2, NI, false>(p, kw, tiles, ctx);
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
    set_max_dynamic_smem(moe_gemm_frag_kernel<2, NI, true>, Ring<2, NI>::kSmem);
    set_max_dynamic_smem(moe_gemm_frag_kernel<2, NI, false>, Ring<2, NI>::kSmem);
    set_max_dynamic_smem(moe_gemm_frag_kernel<1, NI, false>, Ring<1, NI>::kSmem);
  };
  one.template operator()<1>();
  one.template operator()<2>();
}

}  // namespace ds::gpu
