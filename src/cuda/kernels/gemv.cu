#include <algorithm>

#include "cuda/kernels/common.cuh"
#include "cuda/kernels/gemv.h"

namespace ds::gpu {
namespace {

constexpr int kWarps = 4;                     // warps per block
constexpr int kMaxSmem = 192 * 1024;          // x tile budget (dynamic shared memory)

// 8 consecutive elements as raw 16-byte words (one for bf16, two for fp32).
template <typename T> struct Chunk8 {
  static constexpr int W = sizeof(T) / 2;
  uint4 r[W];
  __device__ __forceinline__ void load_global(const T* p) {
#pragma unroll
    for (int i = 0; i < W; ++i) r[i] = __ldg(reinterpret_cast<const uint4*>(p) + i);
  }
  // Streaming weights: skip L1, ask L2 to fetch 256-byte sectors.
  __device__ __forceinline__ void load_stream(const T* p) {
#pragma unroll
    for (int i = 0; i < W; ++i) {
      const uint4* q = reinterpret_cast<const uint4*>(p) + i;
      asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0,%1,%2,%3}, [%4];"
                   : "=r"(r[i].x), "=r"(r[i].y), "=r"(r[i].z), "=r"(r[i].w) : "l"(q));
    }
  }
  __device__ __forceinline__ void load_shared(const T* p) {
#pragma unroll
    for (int i = 0; i < W; ++i) r[i] = reinterpret_cast<const uint4*>(p)[i];
  }
  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int i = 0; i < W; ++i) r[i] = make_uint4(0, 0, 0, 0);
  }
  __device__ __forceinline__ void to_float(float* f) const {
    if constexpr (sizeof(T) == 4) {
#pragma unroll
      for (int i = 0; i < 8; ++i) f[i] = reinterpret_cast<const float*>(r)[i];
    } else {
      const uint32_t* w = reinterpret_cast<const uint32_t*>(r);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        f[2 * i] = __uint_as_float(w[i] << 16);
        f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
      }
    }
  }
};

// The fused prologue's norm weights, loaded by each thread before the kernel waits on its
// predecessor (they are immutable): RMSNorm, chunks threadIdx.x + q * blockDim.x of the row
// (q < kRegs; the rest, if any, are loaded later); KDA output norm, the one chunk of the head this
// thread normalises.
template <typename T>
struct NormPre {
  static constexpr int kRegs = 3;  // a 2304-wide row at 128 threads
  Chunk8<T> w[kRegs];
  __device__ __forceinline__ void load(const GemvParams& p) {
    if (!p.norm_weight) return;
    const T* nw = static_cast<const T*>(p.norm_weight);
    if (p.gate) {
      w[0].load_global(nw + (threadIdx.x % (p.gate_head_dim / 8)) * 8);
      return;
    }
#pragma unroll
    for (int q = 0; q < kRegs; ++q) {
      const int c = (threadIdx.x + q * blockDim.x) * 8;
      if (c < p.K) w[q].load_global(nw + c);
    }
  }
};

// Loads rows [r0, r0 + mt) of x, columns [k0, k0 + kt), into the shared tile (row stride kt_max) and
// applies the fused prologue: the KDA output norm (p.gate) or an RMSNorm (p.norm_weight), with all
// threads and no chain of dependent global loads (the latency of this prologue is paid once per block).
template <typename T>
__device__ void load_x_tile(const GemvParams& p, T* xs, int kt_max, const T* X, int r0, int mt, int k0, int kt,
                            const NormPre<T>& pre) {
  constexpr int kXU = 3;  // x chunks per thread in flight (a 2304-wide row at 128 threads)
  __shared__ float inv_s[8];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int vecs = kt / 8, nthr = blockDim.x;
  __syncthreads();
  for (int i0 = threadIdx.x; i0 < mt * vecs; i0 += kXU * nthr) {
    Chunk8<T> v[kXU];
#pragma unroll
    for (int u = 0; u < kXU; ++u) {
      const int i = i0 + u * nthr;
      if (i < mt * vecs) {
        const int m = i / vecs, c = (i % vecs) * 8;
        const int r = r0 + m;
        const int64_t xr = p.x_rows ? p.x_rows[r] : r;
        v[u].load_global(X + xr * p.ldx + k0 + c);
      }
    }
#pragma unroll
    for (int u = 0; u < kXU; ++u) {
      const int i = i0 + u * nthr;
      if (i < mt * vecs) {
        const int m = i / vecs, c = (i % vecs) * 8;
#pragma unroll
        for (int q = 0; q < Chunk8<T>::W; ++q) reinterpret_cast<uint4*>(xs + m * kt_max + c)[q] = v[u].r[q];
      }
    }
  }
  __syncthreads();
  if (p.gate) {  // KDA output norm per (row, head): lpj lanes per head, 8 values per lane
    const int hd = p.gate_head_dim, heads = p.K / hd, lpj = hd / 8;
    const int per_pass = nthr / lpj, js = threadIdx.x / lpj, c = (threadIdx.x % lpj) * 8;
    float fw[8];
    pre.w[0].to_float(fw);
    constexpr int kJU = 2;  // jobs per thread whose gate loads are in flight together
    for (int j0 = 0; j0 < mt * heads; j0 += kJU * per_pass) {
      Chunk8<T> g[kJU];
#pragma unroll
      for (int u = 0; u < kJU; ++u) {
        const int job = j0 + u * per_pass + js;
        if (job < mt * heads)
          g[u].load_global(static_cast<const T*>(p.gate) + int64_t(r0 + job / heads) * p.ld_gate + (job % heads) * hd + c);
      }
#pragma unroll
      for (int u = 0; u < kJU; ++u) {
        const int job = j0 + u * per_pass + js;
        const bool on = job < mt * heads;  // uniform over the job's lanes
        T* row = xs + (on ? (job / heads) * kt_max + (job % heads) * hd : 0);
        float f[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
        if (on) {
          Chunk8<T> v;
          v.load_shared(row + c);
          v.to_float(f);
        }
        float ss = 0.f;
#pragma unroll
        for (int e = 0; e < 8; ++e) ss += f[e] * f[e];
        for (int o = lpj / 2; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
        if (on) {
          const float inv = rsqrtf(ss / float(hd) + p.norm_eps);
          float fg[8];
          g[u].to_float(fg);
          T out[8];
#pragma unroll
          for (int e = 0; e < 8; ++e) out[e] = from_f32<T>(f[e] * inv * fw[e] * (1.f / (1.f + expf(-fg[e]))));
#pragma unroll
          for (int e = 0; e < 8; ++e) row[c + e] = out[e];
        }
      }
    }
    __syncthreads();
  } else if (p.norm_weight) {  // the whole row is in the tile (checked on the host)
    for (int m = warp; m < mt; m += kWarps) {  // sum of squares of each row, from shared memory
      const T* row = xs + m * kt_max;
      float ss = 0.f;
      for (int c = lane * 8; c < p.K; c += 256) {
        Chunk8<T> v;
        v.load_shared(row + c);
        float f[8];
        v.to_float(f);
#pragma unroll
        for (int e = 0; e < 8; ++e) ss += f[e] * f[e];
      }
      ss = warp_sum(ss);
      if (lane == 0) inv_s[m] = rsqrtf(ss / float(p.K) + p.norm_eps);
    }
    __syncthreads();
    // every thread scales its column chunks in all rows: c = (threadIdx.x + q * nthr) * 8
    auto scale = [&](const Chunk8<T>& w, int c) {
      float g[8];
      w.to_float(g);
      for (int m = 0; m < mt; ++m) {
        Chunk8<T> v;
        v.load_shared(xs + m * kt_max + c);
        float f[8];
        v.to_float(f);
        T out[8];
#pragma unroll
        for (int e = 0; e < 8; ++e) out[e] = from_f32<T>(f[e] * inv_s[m] * g[e]);
#pragma unroll
        for (int e = 0; e < 8; ++e) xs[m * kt_max + c + e] = out[e];
      }
    };
#pragma unroll
    for (int q = 0; q < NormPre<T>::kRegs; ++q) {
      const int c = (threadIdx.x + q * nthr) * 8;
      if (c < p.K) scale(pre.w[q], c);
    }
    const T* nw = static_cast<const T*>(p.norm_weight);
    for (int c = (threadIdx.x + NormPre<T>::kRegs * nthr) * 8; c < p.K; c += nthr * 8) {
      Chunk8<T> w;
      w.load_global(nw + c);
      scale(w, c);
    }
    __syncthreads();
  }
}

// acc += w-chunk . x-chunk for the tile's rows (8 elements at column c of the tile).
template <typename T, int MT>
__device__ __forceinline__ void fma_chunk(const Chunk8<T>& a, const Chunk8<T>& b, const T* xs, int kt_max, int c,
                                          int mt, float* acc0, float* acc1) {
  float fa[8], fb[8];
  a.to_float(fa);
  b.to_float(fb);
#pragma unroll
  for (int m = 0; m < MT; ++m) {
    if (m < mt) {
      Chunk8<T> xv;
      xv.load_shared(xs + m * kt_max + c);
      float fx[8];
      xv.to_float(fx);
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        acc0[m] = fmaf(fa[e], fx[e], acc0[m]);
        acc1[m] = fmaf(fb[e], fx[e], acc1[m]);
      }
    }
  }
}

// Reduces a warp's partial sums and writes output column c0 (and c0 + 1) of rows [r0, r0 + mt).
template <typename OutT, GemvEpilogue Epi, int MT>
__device__ __forceinline__ void store_cols(const GemvParams& p, OutT* Y, int r0, int mt, int c0, bool v1,
                                           const float* acc0, const float* acc1, int lane) {
#pragma unroll
  for (int m = 0; m < MT; ++m) {
    if (m < mt) {
      const float s0 = warp_sum(acc0[m]), s1 = warp_sum(acc1[m]);
      if (lane == 0) {
        OutT* y = Y + int64_t(r0 + m) * p.ldy;
        if constexpr (Epi == GemvEpilogue::SiluMul) {
          y[c0] = from_f32<OutT>(siluf_(s0) * s1);
        } else if constexpr (Epi == GemvEpilogue::Accumulate) {
          y[c0] = from_f32<OutT>(to_f32(y[c0]) + s0);
          if (v1) y[c0 + 1] = from_f32<OutT>(to_f32(y[c0 + 1]) + s1);
        } else {
          y[c0] = from_f32<OutT>(s0);
          if (v1) y[c0 + 1] = from_f32<OutT>(s1);
        }
      }
    }
  }
}

// The early-load path (whole K in the x tile, every row of the slot in one tile): a warp walks its
// `groups` row pairs as "items" of U chunks of 8 elements per lane, loading each item's chunks before
// using any. The first item is requested before the x tile and its norm are prepared, and for dense
// weights (immutable) before waiting on the previous kernel (PDL). (Measured: also requesting the
// next item's chunks as the current ones are used was slower: lm_head 0.224 vs 0.179 ms.)
template <typename T, typename OutT, GemvEpilogue Epi, int MT, int U>
__device__ __forceinline__ void gemv_pipelined(const GemvParams& p, T* xs, int kt_max, int groups,
                                               const NormPre<T>& pre) {
  const int slot = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  constexpr bool kPair = Epi == GemvEpilogue::SiluMul;
  constexpr int kCols = kPair ? 1 : 2;
  constexpr int kStep = 256 * U;  // elements of a row per item
  const int iters = (p.K + kStep - 1) / kStep;
  const int items = groups * iters;
  const T* W = nullptr;
  Chunk8<T> a[U], b[U];
  // item j: the warp's row pair and this lane's first column; false when the columns are past N
  auto item = [&](int j, const T*& w0, const T*& w1, int& cb, int& c0) -> bool {
    const int g = j / iters;
    c0 = ((blockIdx.x * groups + g) * kWarps + warp) * kCols;
    cb = (j - g * iters) * kStep + lane * 8;
    if (j >= items || c0 >= p.N) return false;
    w0 = W + int64_t(c0) * p.K;
    w1 = W + int64_t(kPair ? p.N + c0 : min(c0 + 1, p.N - 1)) * p.K;
    return true;
  };
  auto request_first = [&] {
    const T *w0 = nullptr, *w1 = nullptr;
    int cb = 0, c0 = 0;
    if (!item(0, w0, w1, cb, c0)) return;
#pragma unroll
    for (int u = 0; u < U; ++u)
      if (cb + u * 256 < p.K) {
        a[u].load_global(w0 + cb + u * 256);
        b[u].load_global(w1 + cb + u * 256);
      }
  };
  if (!p.slot_weight) {
    W = static_cast<const T*>(p.w) + int64_t(slot) * p.w_group_stride;
    request_first();
  }
  pdl_wait();
  if (p.num_active && slot >= *p.num_active) return;
  int row0 = 0, rows = p.M;
  if (p.slot_start) {
    row0 = p.slot_start[slot];
    rows = p.slot_start[slot + 1] - row0;
  }
  if (rows <= 0) return;
  if (p.slot_weight) {
    W = static_cast<const T*>(p.w) + int64_t(p.slot_weight[slot]) * p.w_group_stride;
    request_first();
  }
  const T* X = static_cast<const T*>(p.x) + int64_t(slot) * p.x_slot_stride;
  OutT* Y = static_cast<OutT*>(p.y) + int64_t(slot) * p.y_slot_stride;
  load_x_tile(p, xs, kt_max, X, row0, rows, 0, p.K, pre);
  float acc0[MT], acc1[MT];
#pragma unroll
  for (int m = 0; m < MT; ++m) acc0[m] = acc1[m] = 0.f;
  for (int j = 0; j < items; ++j) {
    const T *w0 = nullptr, *w1 = nullptr;
    int cb = 0, c0 = 0;
    const bool ok = item(j, w0, w1, cb, c0);
    if (ok && j > 0) {  // item 0 was requested up front
#pragma unroll
      for (int u = 0; u < U; ++u)
        if (cb + u * 256 < p.K) {
          a[u].load_global(w0 + cb + u * 256);
          b[u].load_global(w1 + cb + u * 256);
        }
    }
    if (ok) {
#pragma unroll
      for (int u = 0; u < U; ++u)
        if (cb + u * 256 < p.K) fma_chunk<T, MT>(a[u], b[u], xs, kt_max, cb + u * 256, rows, acc0, acc1);
    }
    if ((j + 1) % iters == 0) {  // the row pair is done
      if (ok) store_cols<OutT, Epi, MT>(p, Y, row0, rows, c0, kPair || c0 + 1 < p.N, acc0, acc1, lane);
#pragma unroll
      for (int m = 0; m < MT; ++m) acc0[m] = acc1[m] = 0.f;
    }
  }
}

// The general path: a warp streams `groups` pairs of weight rows (Store/Accumulate: output columns c,
// c+1; SiluMul: gate row c and up row N + c of output column c) against up to MT rows of x held in
// shared memory, K in tiles of kt_max. U chunks of 8 elements per row per lane are loaded before any
// is used. `pipelined`: take gemv_pipelined instead (the host checks that it applies).
template <typename T, typename OutT, GemvEpilogue Epi, int MT, int U>
__global__ void __launch_bounds__(kWarps * 32) gemv_kernel(GemvParams p, int kt_max, int groups, bool pipelined) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* xs = reinterpret_cast<T*>(smem_raw);  // [MT][kt_max]
  pdl_trigger();
  NormPre<T> pre;
  pre.load(p);
  if (pipelined) {
    gemv_pipelined<T, OutT, Epi, MT, U>(p, xs, kt_max, groups, pre);
    return;
  }
  const int slot = blockIdx.y;
  pdl_wait();
  if (p.num_active && slot >= *p.num_active) return;
  int row0 = 0, rows = p.M;
  if (p.slot_start) {
    row0 = p.slot_start[slot];
    rows = p.slot_start[slot + 1] - row0;
  }
  if (rows <= 0) return;
  const int wg = p.slot_weight ? p.slot_weight[slot] : slot;
  const T* W = static_cast<const T*>(p.w) + int64_t(wg) * p.w_group_stride;
  const T* X = static_cast<const T*>(p.x) + int64_t(slot) * p.x_slot_stride;
  OutT* Y = static_cast<OutT*>(p.y) + int64_t(slot) * p.y_slot_stride;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  constexpr bool kPair = Epi == GemvEpilogue::SiluMul;
  constexpr int kCols = kPair ? 1 : 2;  // output columns per row pair

  for (int m0 = 0; m0 < rows; m0 += MT) {
    const int mt = min(MT, rows - m0);
    for (int g = 0; g < groups; ++g) {
      const int c0 = ((blockIdx.x * groups + g) * kWarps + warp) * kCols;  // first output column
      const bool v0 = c0 < p.N, v1 = kPair ? v0 : c0 + 1 < p.N;
      const T* w0 = W + int64_t(v0 ? c0 : 0) * p.K;
      const T* w1 = W + int64_t(kPair ? (v0 ? p.N + c0 : 0) : (v1 ? c0 + 1 : 0)) * p.K;
      float acc0[MT], acc1[MT];
#pragma unroll
      for (int m = 0; m < MT; ++m) acc0[m] = acc1[m] = 0.f;
      for (int k0 = 0; k0 < p.K; k0 += kt_max) {
        const int kt = min(kt_max, p.K - k0);
        if (g == 0 || kt_max < p.K) load_x_tile(p, xs, kt_max, X, row0 + m0, mt, k0, kt, pre);  // once if all K fits
        if (!v0) continue;
        for (int cb = lane * 8; cb < kt; cb += 256 * U) {
          Chunk8<T> a[U], b[U];
#pragma unroll
          for (int u = 0; u < U; ++u) {
            const int c = cb + u * 256;
            if (c < kt) {
              if (p.stream_hint) {
                a[u].load_stream(w0 + k0 + c);
                b[u].load_stream(w1 + k0 + c);
              } else {
                a[u].load_global(w0 + k0 + c);
                b[u].load_global(w1 + k0 + c);
              }
            }
          }
#pragma unroll
          for (int u = 0; u < U; ++u) {
            const int c = cb + u * 256;
            if (c < kt) fma_chunk<T, MT>(a[u], b[u], xs, kt_max, c, mt, acc0, acc1);
          }
        }
      }
      if (v0) store_cols<OutT, Epi, MT>(p, Y, row0 + m0, mt, c0, v1, acc0, acc1, lane);
    }
  }
}

// MoeDownCombineParams: a block of one warp per expert (up to kDcWarps) owns two output columns; warp
// w takes experts j = w, w + nwarps, ... and loads, per lane, 4 chunks of 8 of both weight rows and of
// the activation row (no shared tile: one round of loads when k <= kDcWarps); the warps' weighted
// partial sums meet in shared memory. (Measured at 9 experts: 8 warps, one doing two rounds, 17.6 us;
// 9 warps, one round each, 20.2 us.)
constexpr int kDcWarps = 8;
template <typename T>
__global__ void __launch_bounds__(kDcWarps * 32) moe_down_combine_kernel(MoeDownCombineParams p) {
  constexpr int kU = 4;
  __shared__ float part[kDcWarps][2];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nwarps = blockDim.x >> 5;
  const int c0 = blockIdx.x * 2;
  const bool v1 = c0 + 1 < p.D;
  const int64_t ge = int64_t(p.D) * p.I;  // elements per expert
  pdl_trigger();
  pdl_wait();
  float acc0 = 0.f, acc1 = 0.f;
  for (int j = warp; j < p.k; j += nwarps) {
    const T* W = static_cast<const T*>(p.w) + int64_t(p.ids[j]) * ge;
    const T* w0 = W + int64_t(c0) * p.I;
    const T* w1 = W + int64_t(v1 ? c0 + 1 : c0) * p.I;
    const T* x = static_cast<const T*>(p.act) + int64_t(p.pair_pos[j]) * p.I;
    const float wj = p.weights[j];
    float s0 = 0.f, s1 = 0.f;
    for (int cb = lane * 8; cb < p.I; cb += 256 * kU) {
      Chunk8<T> a[kU], b[kU], xv[kU];
#pragma unroll
      for (int u = 0; u < kU; ++u)
        if (cb + u * 256 < p.I) {
          a[u].load_global(w0 + cb + u * 256);
          b[u].load_global(w1 + cb + u * 256);
          xv[u].load_global(x + cb + u * 256);
        }
#pragma unroll
      for (int u = 0; u < kU; ++u)
        if (cb + u * 256 < p.I) {
          float fa[8], fb[8], fx[8];
          a[u].to_float(fa);
          b[u].to_float(fb);
          xv[u].to_float(fx);
#pragma unroll
          for (int e = 0; e < 8; ++e) {
            s0 = fmaf(fa[e], fx[e], s0);
            s1 = fmaf(fb[e], fx[e], s1);
          }
        }
    }
    acc0 = fmaf(wj, s0, acc0);
    acc1 = fmaf(wj, s1, acc1);
  }
  acc0 = warp_sum(acc0);
  acc1 = warp_sum(acc1);
  if (lane == 0) {
    part[warp][0] = acc0;
    part[warp][1] = acc1;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    float r0 = 0.f, r1 = 0.f;
    for (int w = 0; w < nwarps; ++w) {
      r0 += part[w][0];
      r1 += part[w][1];
    }
    T* y = static_cast<T*>(p.residual);
    y[c0] = from_f32<T>(to_f32(y[c0]) + r0);
    if (v1) y[c0 + 1] = from_f32<T>(to_f32(y[c0 + 1]) + r1);
  }
}

// ---- asynchronous weight streaming (batch 1, bf16) ----------------------------------------------------
// Each lane copies its own 16-byte chunks of the warp's row pairs into a per-warp ring of kAsyncStages
// shared-memory stages with cp.async (no registers held while in flight) and reads back only what it
// copied itself, so a thread-local cp.async.wait_group is all the synchronisation needed. The grid is
// about two blocks per SM and every warp walks several row pairs, so the memory system sees a steady
// stream instead of waves of one-round-trip blocks with gaps between them.
// stages per warp: ~18 KB in flight per warp whatever the item size (2 rows x U chunks of 16 bytes x 32 lanes)
template <int U> constexpr int async_stages() { return U >= 8 ? 2 : 4; }

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  const unsigned sa = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(sa), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N)); }

// bytes of dynamic shared memory: the x row, then per warp kAsyncStages stages of 2 rows x U chunks x 32 lanes
template <int U> constexpr size_t async_ring_bytes() { return size_t(kWarps) * async_stages<U>() * 2 * U * 32 * 16; }

template <typename OutT, GemvEpilogue Epi, int U>
__global__ void __launch_bounds__(kWarps * 32) gemv_async_kernel(GemvParams p, int groups) {
  using T = bf16;
  constexpr int kAsyncStages = async_stages<U>();
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int K8 = (p.K + 7) / 8 * 8;
  uint4* ring = reinterpret_cast<uint4*>(smem_raw);  // [warp][stage][row][u][lane]
  T* xs = reinterpret_cast<T*>(smem_raw + async_ring_bytes<U>());
  const int slot = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  constexpr bool kPair = Epi == GemvEpilogue::SiluMul;
  constexpr int kCols = kPair ? 1 : 2;
  constexpr int kStep = 256 * U;
  const int iters = (p.K + kStep - 1) / kStep, items = groups * iters;
  uint4* my = ring + size_t(warp) * kAsyncStages * 2 * U * 32;
  const T* W = nullptr;
  auto item = [&](int j, const T*& w0, const T*& w1, int& cb, int& c0) -> bool {
    const int g = j / iters;
    c0 = ((blockIdx.x * groups + g) * kWarps + warp) * kCols;
    cb = (j - g * iters) * kStep + lane * 8;
    if (j >= items || c0 >= p.N) return false;
    w0 = W + int64_t(c0) * p.K;
    w1 = W + int64_t(kPair ? p.N + c0 : min(c0 + 1, p.N - 1)) * p.K;
    return true;
  };
  auto issue = [&](int j) {  // item j into stage j % kAsyncStages; always one commit group
    const T *w0 = nullptr, *w1 = nullptr;
    int cb = 0, c0 = 0;
    if (item(j, w0, w1, cb, c0)) {
      uint4* st = my + size_t(j % kAsyncStages) * 2 * U * 32;
#pragma unroll
      for (int u = 0; u < U; ++u)
        if (cb + u * 256 < p.K) {
          cp_async16(st + (0 * U + u) * 32 + lane, w0 + cb + u * 256);
          cp_async16(st + (1 * U + u) * 32 + lane, w1 + cb + u * 256);
        }
    }
    cp_async_commit();
  };
  pdl_trigger();
  NormPre<T> pre;
  pre.load(p);
  if (!p.slot_weight) {  // dense weights are immutable: start streaming before the wait
    W = static_cast<const T*>(p.w) + int64_t(slot) * p.w_group_stride;
#pragma unroll
    for (int j = 0; j < kAsyncStages; ++j) issue(j);
  }
  pdl_wait();
  if (p.num_active && slot >= *p.num_active) return;
  int row0 = 0, rows = p.M;
  if (p.slot_start) {
    row0 = p.slot_start[slot];
    rows = p.slot_start[slot + 1] - row0;
  }
  if (rows <= 0) return;
  if (p.slot_weight) {
    W = static_cast<const T*>(p.w) + int64_t(p.slot_weight[slot]) * p.w_group_stride;
#pragma unroll
    for (int j = 0; j < kAsyncStages; ++j) issue(j);
  }
  const T* X = static_cast<const T*>(p.x) + int64_t(slot) * p.x_slot_stride;
  OutT* Y = static_cast<OutT*>(p.y) + int64_t(slot) * p.y_slot_stride;
  load_x_tile(p, xs, K8, X, row0, 1, 0, p.K, pre);
  float acc0[1] = {0.f}, acc1[1] = {0.f};
  for (int j = 0; j < items; ++j) {
    const T *w0 = nullptr, *w1 = nullptr;
    int cb = 0, c0 = 0;
    const bool ok = item(j, w0, w1, cb, c0);
    cp_async_wait<kAsyncStages - 1>();  // this thread's copies of item j have landed
    if (ok) {
      const uint4* st = my + size_t(j % kAsyncStages) * 2 * U * 32;
#pragma unroll
      for (int u = 0; u < U; ++u)
        if (cb + u * 256 < p.K) {
          Chunk8<T> a, b;
          a.r[0] = st[(0 * U + u) * 32 + lane];
          b.r[0] = st[(1 * U + u) * 32 + lane];
          fma_chunk<T, 1>(a, b, xs, K8, cb + u * 256, 1, acc0, acc1);
        }
    }
    issue(j + kAsyncStages);  // into the stage just read (this lane's own slots)
    if ((j + 1) % iters == 0) {
      if (ok) store_cols<OutT, Epi, 1>(p, Y, row0, 1, c0, kPair || c0 + 1 < p.N, acc0, acc1, lane);
      acc0[0] = acc1[0] = 0.f;
    }
  }
  cp_async_wait<0>();
}

// Row groups for the asynchronous kernel: about two blocks per SM.
int async_groups(const GemvParams& p, int num_sms) {
  const int cols_per_group = (p.epi == GemvEpilogue::SiluMul ? 1 : 2) * kWarps;
  const int64_t blocks_at_1 = int64_t((p.N + cols_per_group - 1) / cols_per_group) * std::max(1, p.num_slots);
  return int(std::max<int64_t>(1, (blocks_at_1 + 2 * num_sms - 1) / (2 * num_sms)));
}

template <typename OutT, GemvEpilogue Epi, int U>
void launch_async(const GemvParams& p, int num_sms, cudaStream_t s) {
  const int groups = p.row_groups > 0 ? p.row_groups : async_groups(p, num_sms);
  const int cols_per_block = (Epi == GemvEpilogue::SiluMul ? 1 : 2) * kWarps * groups;
  const dim3 grid(ceil_div(p.N, cols_per_block), unsigned(p.num_slots));
  const size_t smem = async_ring_bytes<U>() + size_t((p.K + 7) / 8 * 8) * sizeof(bf16);
  auto kern = gemv_async_kernel<OutT, Epi, U>;
  static bool configured = false;
  if (!configured) {
    DS_CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, kMaxSmem));
    configured = true;
  }
  launch_pdl(kern, grid, kWarps * 32, smem, s, p, groups);
}

// The asynchronous kernel applies: bf16, one row per slot, the whole x row in shared memory, and not a
// huge matrix (lm_head, 755 MB, streams at 97% with register loads, 93% through the ring).
bool use_async(const GemvParams& p, DType act) {
  const int row_bound = p.slot_start ? p.max_rows : p.M;
  const double bytes = double(p.N) * p.K * 2 * std::max(1, p.num_slots);
  return p.async_stream && p.pipelined && !p.stream_hint && act == DType::BF16 && row_bound == 1 &&
         bytes <= 256e6 && async_ring_bytes<9>() + size_t(p.K) * 2 + 16 <= size_t(kMaxSmem);
}

template <typename OutT, GemvEpilogue Epi>
void launch_async_u(const GemvParams& p, int num_sms, cudaStream_t s) {
  const int chunks = (p.K + 255) / 256;
  if (chunks == 9) launch_async<OutT, Epi, 9>(p, num_sms, s);
  else if (chunks <= 4) launch_async<OutT, Epi, 4>(p, num_sms, s);
  else launch_async<OutT, Epi, 8>(p, num_sms, s);
}

// One row of x (M = 1), K split over the block's 4 warps (a quarter each, whole 256-element chunks), two
// output columns per block: every warp issues all its loads in one round (x, gate and weight chunks),
// applies the KDA output norm (if any) to its quarter in registers, and the 4 partial sums meet in
// shared memory. For wide-K, small-N projections (o_proj: N 2304, K 4096), where the row-pair kernel
// has too few blocks and too long a prologue.
constexpr int kSkU = 4;  // chunks of 8 per lane per round
template <typename T, typename OutT, GemvEpilogue Epi>
__global__ void __launch_bounds__(kWarps * 32) gemv_splitk_kernel(GemvParams p) {
  __shared__ float part[kWarps][2], ss_part[kWarps];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nwarps = blockDim.x >> 5;
  const int c0 = blockIdx.x * 2;
  const bool v1 = c0 + 1 < p.N;
  const int Q = p.K / nwarps, k0 = warp * Q;
  const bool rms = p.norm_weight && !p.gate;  // RMSNorm of the whole row: Q <= 256 * kSkU (one round)
  const T* w0 = static_cast<const T*>(p.w) + int64_t(c0) * p.K;
  const T* w1 = static_cast<const T*>(p.w) + int64_t(v1 ? c0 + 1 : c0) * p.K;
  pdl_trigger();
  Chunk8<T> a[kSkU], b[kSkU], nw, rw[kSkU];
  const int hd = p.gate_head_dim, lpj = hd / 8;
  if (p.gate) nw.load_global(static_cast<const T*>(p.norm_weight) + (lane % lpj) * 8);
  if (rms) {
#pragma unroll
    for (int u = 0; u < kSkU; ++u)
      if (k0 + lane * 8 + u * 256 < k0 + Q) rw[u].load_global(static_cast<const T*>(p.norm_weight) + k0 + lane * 8 + u * 256);
  }
#pragma unroll
  for (int u = 0; u < kSkU; ++u) {  // first round of weights: immutable, so before the wait
    const int c = k0 + lane * 8 + u * 256;
    if (c < k0 + Q) {
      a[u].load_global(w0 + c);
      b[u].load_global(w1 + c);
    }
  }
  pdl_wait();
  const T* X = static_cast<const T*>(p.x);
  float acc0 = 0.f, acc1 = 0.f;
  for (int cb = k0 + lane * 8; cb < k0 + Q; cb += 256 * kSkU) {
    if (cb != k0 + lane * 8) {
#pragma unroll
      for (int u = 0; u < kSkU; ++u) {
        const int c = cb + u * 256;
        if (c < k0 + Q) {
          a[u].load_global(w0 + c);
          b[u].load_global(w1 + c);
        }
      }
    }
    Chunk8<T> xv[kSkU], gv[kSkU];
#pragma unroll
    for (int u = 0; u < kSkU; ++u) {
      const int c = cb + u * 256;
      if (c < k0 + Q) {
        xv[u].load_global(X + c);
        if (p.gate) gv[u].load_global(static_cast<const T*>(p.gate) + c);
      }
    }
    float inv_rms = 1.f;
    if (rms) {  // sum of squares of the row: this warp's quarter, then all quarters through shared memory
      float ss = 0.f;
#pragma unroll
      for (int u = 0; u < kSkU; ++u)
        if (cb + u * 256 < k0 + Q) {
          float f[8];
          xv[u].to_float(f);
#pragma unroll
          for (int e = 0; e < 8; ++e) ss += f[e] * f[e];
        }
      ss = warp_sum(ss);
      if (lane == 0) ss_part[warp] = ss;
      __syncthreads();
      float tot = 0.f;
      for (int w = 0; w < nwarps; ++w) tot += ss_part[w];
      inv_rms = rsqrtf(tot / float(p.K) + p.norm_eps);
    }
#pragma unroll
    for (int u = 0; u < kSkU; ++u) {
      const int c = cb + u * 256;
      if (c >= k0 + Q) break;  // uniform over the warp
      float fx[8], fa[8], fb[8];
      xv[u].to_float(fx);
      if (p.gate) {  // rmsnorm of the head (lpj lanes hold it) * weight * sigmoid(gate), rounded like the tile
        float ss = 0.f;
#pragma unroll
        for (int e = 0; e < 8; ++e) ss += fx[e] * fx[e];
        for (int o = lpj / 2; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
        const float inv = rsqrtf(ss / float(hd) + p.norm_eps);
        float fw[8], fg[8];
        nw.to_float(fw);
        gv[u].to_float(fg);
#pragma unroll
        for (int e = 0; e < 8; ++e) fx[e] = to_f32(from_f32<T>(fx[e] * inv * fw[e] * (1.f / (1.f + expf(-fg[e])))));
      } else if (rms) {  // x * rsqrt(mean(x^2) + eps) * w, rounded like the tile
        float fw[8];
        rw[u].to_float(fw);
#pragma unroll
        for (int e = 0; e < 8; ++e) fx[e] = to_f32(from_f32<T>(fx[e] * inv_rms * fw[e]));
      }
      a[u].to_float(fa);
      b[u].to_float(fb);
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        acc0 = fmaf(fa[e], fx[e], acc0);
        acc1 = fmaf(fb[e], fx[e], acc1);
      }
    }
  }
  acc0 = warp_sum(acc0);
  acc1 = warp_sum(acc1);
  if (lane == 0) {
    part[warp][0] = acc0;
    part[warp][1] = acc1;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    float s0 = 0.f, s1 = 0.f;
    for (int w = 0; w < nwarps; ++w) {
      s0 += part[w][0];
      s1 += part[w][1];
    }
    OutT* y = static_cast<OutT*>(p.y);
    if constexpr (Epi == GemvEpilogue::Accumulate) {
      y[c0] = from_f32<OutT>(to_f32(y[c0]) + s0);
      if (v1) y[c0 + 1] = from_f32<OutT>(to_f32(y[c0 + 1]) + s1);
    } else {
      y[c0] = from_f32<OutT>(s0);
      if (v1) y[c0 + 1] = from_f32<OutT>(s1);
    }
  }
}

// Warps the split-K kernel splits K over: the most (<= 4) that divide its 256-element chunks evenly
// (K 4096: 4; K 2304: 3).
int splitk_warps(int K) {
  if (K % 256) return 0;
  for (int w = kWarps; w >= 2; --w)
    if ((K / 256) % w == 0) return w;
  return 0;
}

// The split-K kernel applies: one row, one slot, no gather, no SiluMul, K made of whole 256-element
// chunks per warp (an RMSNorm prologue only when each warp's share is one round of loads), N small
// enough that the row-pair kernel would have under ~3 blocks per SM.
bool use_splitk(const GemvParams& p, int num_sms) {
  const int w = splitk_warps(p.K);
  return p.pipelined && p.split_k && p.M == 1 && !p.slot_start && p.num_slots == 1 && !p.x_rows && w > 0 &&
         p.epi != GemvEpilogue::SiluMul && (!p.gate || p.gate_head_dim <= 256) &&
         (!p.norm_weight || p.gate || p.K / w <= 256 * kSkU) && p.N <= 8 * 3 * num_sms;
}

template <typename T, typename OutT, GemvEpilogue Epi>
void launch_splitk(const GemvParams& p, cudaStream_t s) {
  launch_pdl(gemv_splitk_kernel<T, OutT, Epi>, dim3(ceil_div(p.N, 2)), splitk_warps(p.K) * 32, 0, s, p);
}

template <typename T, typename OutT, GemvEpilogue Epi, int MT, int U>
void launch_mtu(const GemvParams& p, int groups, cudaStream_t s) {
  int kt_max = std::min<int>(p.K, kMaxSmem / (MT * int(sizeof(T))));
  DS_GPU_REQUIRE(!p.norm_weight || kt_max >= p.K, "run_gemv: a fused norm needs the whole row in shared memory");
  const int lpj = p.gate_head_dim / 8;  // lanes per head in the gated-norm prologue: a power of two <= 32
  DS_GPU_REQUIRE(!p.gate || (p.norm_weight && p.gate_head_dim % 8 == 0 && lpj >= 1 && lpj <= 32 &&
                             (lpj & (lpj - 1)) == 0 && p.K % p.gate_head_dim == 0 && !p.x_rows),
                 "run_gemv: bad gated-norm prologue (head_dim must be 8 x a power of two <= 256)");
  kt_max = kt_max / 8 * 8;
  const int cols_per_warp = Epi == GemvEpilogue::SiluMul ? 1 : 2;
  const int cols_per_block = cols_per_warp * kWarps * groups;
  dim3 grid(ceil_div(p.N, cols_per_block), unsigned(p.num_slots));
  size_t smem = size_t(MT) * kt_max * sizeof(T);
  auto kern = gemv_kernel<T, OutT, Epi, MT, U>;
  static bool configured = false;  // once per instance (not during graph capture)
  if (!configured) {
    DS_CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, kMaxSmem));
    configured = true;
  }
  // the pipelined path needs all of K in the tile and every row of a slot in one pass
  const int row_bound = p.slot_start ? p.max_rows : p.M;
  const bool pipelined = p.pipelined && !p.stream_hint && kt_max >= p.K && row_bound <= MT;
  launch_pdl(kern, grid, kWarps * 32, smem, s, p, kt_max, groups, pipelined);
}

// U: 8-element chunks per row per lane in flight; small batches load a whole 2304-wide row at once.
template <typename T, typename OutT, GemvEpilogue Epi, int MT>
void launch_mt(const GemvParams& p, int groups, cudaStream_t s) {
  if constexpr (MT <= 2) {
    const int chunks = (p.K + 255) / 256;
    if (chunks == 9) launch_mtu<T, OutT, Epi, MT, 9>(p, groups, s);
    else if (chunks <= 4) launch_mtu<T, OutT, Epi, MT, 4>(p, groups, s);  // fewer registers, more warps
    else launch_mtu<T, OutT, Epi, MT, 8>(p, groups, s);
  } else {
    launch_mtu<T, OutT, Epi, MT, 4>(p, groups, s);
  }
}

template <typename T, typename OutT, GemvEpilogue Epi>
void launch(const GemvParams& p, int groups, cudaStream_t s) {
  int mr = std::max(1, std::min(p.slot_start ? p.max_rows : p.M, 8));
  if (mr <= 1) launch_mt<T, OutT, Epi, 1>(p, groups, s);
  else if (mr <= 2) launch_mt<T, OutT, Epi, 2>(p, groups, s);
  else if (mr <= 4) launch_mt<T, OutT, Epi, 4>(p, groups, s);
  else launch_mt<T, OutT, Epi, 8>(p, groups, s);
}

}  // namespace

void run_moe_down_combine(const MoeDownCombineParams& p, DType act, cudaStream_t s) {
  if (p.k == 0 || p.D == 0) return;
  DS_GPU_REQUIRE(p.I > 0 && p.I % 8 == 0, "run_moe_down_combine: I must be a positive multiple of 8");
  dispatch_act(act, [&]<typename T>() {
    launch_pdl(moe_down_combine_kernel<T>, dim3(ceil_div(p.D, 2)), kDcWarps * 32, 0, s, p);
  });
  DS_CUDA_CHECK_LAUNCH();
}

int choose_gemv_row_groups(int out_cols, int num_slots, int num_sms, bool silu_mul) {
  // aim for >= 6 blocks per SM; fewer, longer-lived warps amortise the x-tile prologue (bench sweep:
  // the batch-1 expert gate/up GEMV is best at 2 groups, the KDA input projection at 1-4; one wave of
  // longer-lived blocks with the next row pairs prefetched into L2 was slower: lm_head 0.235 ms)
  const int cols_per_group = (silu_mul ? 1 : 2) * kWarps;
  const int64_t blocks_at_1 = int64_t((out_cols + cols_per_group - 1) / cols_per_group) * std::max(1, num_slots);
  int g = 1;
  while (g < 8 && blocks_at_1 / (2 * g) >= int64_t(6) * num_sms) g *= 2;
  return g;
}

void run_gemv(const GemvParams& p, DType act, cudaStream_t s) {
  if (p.num_slots == 0 || p.N == 0) return;
  DS_GPU_REQUIRE(p.K % 8 == 0 && p.K > 0, "run_gemv: K must be a positive multiple of 8");
  DS_GPU_REQUIRE(p.num_slots <= 65535, "run_gemv: too many slots");
  DS_GPU_REQUIRE(!(p.y_f32 && p.epi != GemvEpilogue::Store), "run_gemv: fp32 output only with Store");
  static int num_sms = [] {
    int d = 0, n = 132;
    cudaGetDevice(&d);
    cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, d);
    return n;
  }();
  const int groups = p.row_groups > 0 ? p.row_groups
                                      : choose_gemv_row_groups(p.N, p.num_slots, num_sms, p.epi == GemvEpilogue::SiluMul);
  if (use_async(p, act) && !use_splitk(p, num_sms)) {
    switch (p.epi) {
      case GemvEpilogue::Store:
        if (p.y_f32) launch_async_u<float, GemvEpilogue::Store>(p, num_sms, s);
        else launch_async_u<bf16, GemvEpilogue::Store>(p, num_sms, s);
        break;
      case GemvEpilogue::SiluMul: launch_async_u<bf16, GemvEpilogue::SiluMul>(p, num_sms, s); break;
      case GemvEpilogue::Accumulate: launch_async_u<bf16, GemvEpilogue::Accumulate>(p, num_sms, s); break;
    }
    DS_CUDA_CHECK_LAUNCH();
    return;
  }
  if (use_splitk(p, num_sms)) {
    dispatch_act(act, [&]<typename T>() {
      if (p.epi == GemvEpilogue::Accumulate) launch_splitk<T, T, GemvEpilogue::Accumulate>(p, s);
      else if (p.y_f32) launch_splitk<T, float, GemvEpilogue::Store>(p, s);
      else launch_splitk<T, T, GemvEpilogue::Store>(p, s);
    });
    DS_CUDA_CHECK_LAUNCH();
    return;
  }
  dispatch_act(act, [&]<typename T>() {
    switch (p.epi) {
      case GemvEpilogue::Store:
        if (p.y_f32) launch<T, float, GemvEpilogue::Store>(p, groups, s);
        else launch<T, T, GemvEpilogue::Store>(p, groups, s);
        break;
      case GemvEpilogue::SiluMul: launch<T, T, GemvEpilogue::SiluMul>(p, groups, s); break;
      case GemvEpilogue::Accumulate: launch<T, T, GemvEpilogue::Accumulate>(p, groups, s); break;
    }
  });
  DS_CUDA_CHECK_LAUNCH();
}

}  // namespace ds::gpu
