// Device pieces of the absorbed MLA decode kernels: the row sizes, the L2 prefetch of a tile's page parts and a
// warp's largest exponent (mla_decode.cu, mla_decode_wgmma.cu, mla_decode_f8.cu), and mla_decode.cu's
// partial-score store, online softmax of one tile's scores, and the write of a split's output (or its
// normalised partial and log2-sum-exp for the combine).
#pragma once
#include <cmath>
#include <cstdint>

#include "cuda/kernels/common.cuh"
#include "cuda/kernels/kda_mma.cuh"
#include "cuda/kernels/mla_decode.h"

namespace ds::gpu::mla_dec {

constexpr int kLat = 512, kRope = 64, kQk = 576, kRows = 32;
constexpr int kF8Row = kQk + 16;  // FP8 row bytes (config/kv_cache_dtype.h fp8_latent_row_bytes)

// L2 prefetch of [gmem, gmem + bytes) (16-byte aligned, a multiple of 16 bytes), no completion to wait for.
__device__ __forceinline__ void prefetch_l2_bulk(const void* gmem, uint32_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(gmem), "r"(bytes) : "memory");
#endif
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

// A CTA's share of its row in tiles of Tile positions (the Hopper kernels: blockIdx.x the split, blockIdx.y the
// row): tiles tile0 .. tile0 + n - 1 of the row's ceil(ctx / Tile).
struct Split {
  int r, sp, ctx, tile0, n;
  const int32_t* bt;
};
template <int Tile> __device__ __forceinline__ Split cta_split(const MlaDecodeParams& p) {
  Split s;
  s.sp = blockIdx.x;
  s.r = blockIdx.y;
  s.ctx = p.context_lens[s.r];
  s.bt = p.block_tables + int64_t(s.r) * p.max_blocks;
  const int tiles = (s.ctx + Tile - 1) / Tile, per = (tiles + p.num_splits - 1) / p.num_splits;
  s.tile0 = s.sp * per;
  s.n = max(0, min(tiles, s.tile0 + per) - s.tile0);
  return s;
}

// Head h's 576 query values (q: the row's queries, bf16) for a warp: lane takes 16-byte chunks lane, lane + 32,
// lane + 64 (< 72) into v (zeros past the chunks or for h >= H); returns the largest |value| of the lane's chunks.
__device__ __forceinline__ float load_q_head(const bf16* q, int h, int H, int lane, uint4 (&v)[3]) {
  float mx = 0.f;
#pragma unroll
  for (int k = 0; k < 3; ++k) {
    const int ch = lane + 32 * k;
    v[k] = ch < 72 && h < H ? *reinterpret_cast<const uint4*>(q + int64_t(h) * kQk + ch * 8) : make_uint4(0, 0, 0, 0);
    const bf16* x = reinterpret_cast<const bf16*>(&v[k]);
#pragma unroll
    for (int t = 0; t < 8; ++t) mx = fmaxf(mx, fabsf(__bfloat162float(x[t])));
  }
  return mx;
}

// One page part of the tile at positions [pos0, min(pos0 + tile, ctx)): the j-th page it touches, as an
// offset in row units (row_units a row) and its bytes (row_bytes a row); off = -1 when there is none.
struct PagePart {
  int64_t off;
  uint32_t bytes;
};
__device__ __forceinline__ PagePart tile_page_part(const int32_t* bt, int block_size, int pos0, int tile, int ctx,
                                                   int j, int row_units, uint32_t row_bytes) {
  PagePart e{-1, 0};
  if (pos0 >= ctx) return e;
  const int page = pos0 / block_size + j;
  const int a = max(pos0, page * block_size), b = min(min(pos0 + tile, ctx), (page + 1) * block_size);
  if (a >= b) return e;
  e.off = (int64_t(bt[page]) * block_size + (a - page * block_size)) * row_units;
  e.bytes = uint32_t(b - a) * row_bytes;
  return e;
}

// A warp's partial scores (mma C fragments acc[head tile][n8 key tile][4] over keys key0 .. key0 + 8·NT - 1)
// into its dim quarter's rows s[head][key].
template <int NT, int LdS>
__device__ __forceinline__ void store_partial_scores(float (*s)[LdS], const float (&acc)[2][NT][4], int key0,
                                                     int lane) {
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; e += 2) {
        const int h = 16 * mt + attn::c_row(e, lane), j = key0 + 8 * nt + attn::c_col(e, lane);
        *reinterpret_cast<float2*>(&s[h][j]) = make_float2(acc[mt][nt][e], acc[mt][nt][e + 1]);
      }
}

// The online softmax of one tile of Tile positions from pos0 (positions >= ctx masked), Tph threads a head
// row (thread tid: head tid / Tph): the scores are the sum of the four dim quarters' partials s[0..3] times
// scale_log2 (and the row scales ks with the FP8 cache); writes P (times ks with the FP8 cache) into p, the
// rescale factor of the running output into alpha[h], and updates the running max m and sum l.
template <typename IO, bool F8, int Tile, int Tph, int LdS, int LdP>
__device__ __forceinline__ void online_softmax_tile(const float (*s)[kRows][LdS], const float* ks, int pos0, int ctx,
                                                    float scale_log2, int tid, IO (*p)[LdP], float* alpha, float* m,
                                                    float* l) {
  constexpr int kPerT = Tile / Tph;
  static_assert(kPerT >= 1, "a softmax thread takes at least one key");
  const int h = tid / Tph, j0 = (tid % Tph) * kPerT;
  float sv[kPerT];
  float mx = -INFINITY;
#pragma unroll
  for (int i = 0; i < kPerT; ++i) {
    const int j = j0 + i;
    float x = (s[0][h][j] + s[1][h][j] + s[2][h][j] + s[3][h][j]) * scale_log2;
    if constexpr (F8) x *= ks[j];
    sv[i] = pos0 + j < ctx ? x : -INFINITY;
    mx = fmaxf(mx, sv[i]);
  }
#pragma unroll
  for (int o2 = 1; o2 < Tph; o2 <<= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o2));
  const float m_old = m[h];
  const float m_new = fmaxf(m_old, mx);
  float sum = 0.f;
#pragma unroll
  for (int i = 0; i < kPerT; ++i) {
    const float pv = attn::fast_exp2(sv[i] - m_new);
    sum += pv;
    if constexpr (F8) p[h][j0 + i] = attn::from_float<IO>(pv * ks[j0 + i]);
    else p[h][j0 + i] = attn::from_float<IO>(pv);
  }
#pragma unroll
  for (int o2 = 1; o2 < Tph; o2 <<= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o2);
  __syncwarp();
  if (tid % Tph == 0) {
    const float a = attn::fast_exp2(m_old - m_new);
    alpha[h] = a;
    l[h] = l[h] * a + sum;
    m[h] = m_new;
  }
}

// The split workspace (several splits): split sp of row r holds, per head h, the normalised partial output
// (kLat fp32) at decode_split_partial and its log2-sum-exp at decode_split_lse; mla_combine_kernel reads them.
__device__ __forceinline__ float* decode_split_partial(const MlaDecodeParams& p, int r, int sp, int h) {
  return static_cast<float*>(p.workspace) + ((int64_t(r) * p.num_splits + sp) * p.num_heads + h) * kLat;
}
__device__ __forceinline__ float& decode_split_lse(const MlaDecodeParams& p, int r, int sp, int h) {
  return static_cast<float*>(p.workspace)[int64_t(p.rows) * p.num_splits * p.num_heads * kLat +
                                          (int64_t(r) * p.num_splits + sp) * p.num_heads + h];
}

// A warp's output columns col0 .. col0 + 8·NO - 1 of the 32 head rows (mma C fragments o[head tile][n8][4],
// heads >= H skipped), divided by the heads' sums l: the output in the activation type with one split,
// else the split's fp32 partial in the workspace.
template <typename IO, int NO>
__device__ __forceinline__ void write_decode_output(const MlaDecodeParams& p, const float (&o)[2][NO][4],
                                                    const float* l, int col0, int r, int sp, int lane) {
  const int H = p.num_heads;
  const bool direct = p.num_splits == 1;
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int e = 0; e < 4; e += 2) {
      const int h = 16 * mt + attn::c_row(e, lane);
      if (h >= H) continue;
      const float inv = l[h] > 0.f ? 1.f / l[h] : 0.f;
#pragma unroll
      for (int nt = 0; nt < NO; ++nt) {
        const int f = col0 + 8 * nt + attn::c_col(e, lane);
        const float x0 = o[mt][nt][e] * inv, x1 = o[mt][nt][e + 1] * inv;
        if (direct) {
          IO* dst = static_cast<IO*>(p.o) + int64_t(r) * p.ldo + h * kLat + f;
          if constexpr (sizeof(IO) == 2) *reinterpret_cast<uint32_t*>(dst) = attn::pack_bf16(x0, x1);
          else *reinterpret_cast<float2*>(dst) = make_float2(x0, x1);
        } else {
          *reinterpret_cast<float2*>(decode_split_partial(p, r, sp, h) + f) = make_float2(x0, x1);
        }
      }
    }
}

// Head h's log2-sum-exp of the split (several splits only; the combine reads it after the partials).
__device__ __forceinline__ void write_decode_lse(const MlaDecodeParams& p, const float* m, const float* l, int r,
                                                 int sp, int h) {
  if (p.num_splits <= 1 || h >= p.num_heads) return;
  decode_split_lse(p, r, sp, h) = l[h] > 0.f ? m[h] + log2f(l[h]) : -INFINITY;
}

}  // namespace ds::gpu::mla_dec
