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

// A warp streams `groups` pairs of weight rows (Store/Accumulate: output columns c, c+1; SiluMul: gate
// row c and up row N + c of output column c) against up to MT rows of x held in shared memory. U chunks
// of 8 elements per row per lane are loaded before any is used.
template <typename T, typename OutT, GemvEpilogue Epi, int MT, int U>
__global__ void __launch_bounds__(kWarps * 32) gemv_kernel(GemvParams p, int kt_max, int groups) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* xs = reinterpret_cast<T*>(smem_raw);  // [MT][kt_max]
  const int slot = blockIdx.y;
  pdl_trigger();
  if (!p.slot_weight) {  // dense: the weights are known before the previous kernel ends; warm L2
    const int c0 = (blockIdx.x * groups * kWarps + (threadIdx.x >> 5)) * (Epi == GemvEpilogue::SiluMul ? 1 : 2);
    if (c0 < p.N) {
      const T* W0 = static_cast<const T*>(p.w) + int64_t(slot) * p.w_group_stride;
      const T* r0 = W0 + int64_t(c0) * p.K;
      const T* r1 = W0 + int64_t(Epi == GemvEpilogue::SiluMul ? p.N + c0 : min(c0 + 1, p.N - 1)) * p.K;
      for (int c = (threadIdx.x & 31) * 64; c < p.K && c < 256 * U; c += 32 * 64) {  // one line per 128 bytes
        prefetch_l2(r0 + c);
        prefetch_l2(r1 + c);
      }
    }
  }
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
        if (g == 0 || kt_max < p.K) {  // (re)load the x tile: once per pass when it holds all of K
          const int vecs = kt / 8;
          __syncthreads();
          for (int i = threadIdx.x; i < mt * vecs; i += blockDim.x) {
            const int m = i / vecs, c = (i % vecs) * 8;
            const int r = row0 + m0 + m;
            const int64_t xr = p.x_rows ? p.x_rows[r] : r;
            Chunk8<T> v;
            v.load_global(X + xr * p.ldx + k0 + c);
#pragma unroll
            for (int q = 0; q < Chunk8<T>::W; ++q) reinterpret_cast<uint4*>(xs + m * kt_max + c)[q] = v.r[q];
          }
          __syncthreads();
          if (p.gate) {  // KDA output norm per head; one warp per (row, head), 8 values per lane
            const T* nw = static_cast<const T*>(p.norm_weight);
            const int hd = p.gate_head_dim, heads = p.K / hd;
            for (int job = warp; job < mt * heads; job += kWarps) {
              const int m = job / heads, h = job % heads;
              T* row = xs + m * kt_max + h * hd;
              const T* gr = static_cast<const T*>(p.gate) + int64_t(row0 + m0 + m) * p.ld_gate + h * hd;
              float f[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
              const int c = lane * 8;
              if (c < hd) {
                Chunk8<T> v;
                v.load_shared(row + c);
                v.to_float(f);
              }
              float ss = 0.f;
#pragma unroll
              for (int e = 0; e < 8; ++e) ss += f[e] * f[e];
              const float inv = rsqrtf(warp_sum(ss) / float(hd) + p.norm_eps);
              if (c < hd) {
                Chunk8<T> w, g;
                w.load_global(nw + c);
                g.load_global(gr + c);
                float fw[8], fg[8];
                w.to_float(fw);
                g.to_float(fg);
#pragma unroll
                for (int e = 0; e < 8; ++e) row[c + e] = from_f32<T>(f[e] * inv * fw[e] * (1.f / (1.f + expf(-fg[e]))));
              }
            }
            __syncthreads();
          } else if (p.norm_weight) {  // the whole row is in the tile (checked on the host)
            const T* nw = static_cast<const T*>(p.norm_weight);
            for (int m = warp; m < mt; m += kWarps) {
              T* row = xs + m * kt_max;
              float ss = 0.f;
              for (int c = lane * 8; c < p.K; c += 256) {
                Chunk8<T> v;
                v.load_shared(row + c);
                float f[8];
                v.to_float(f);
#pragma unroll
                for (int e = 0; e < 8; ++e) ss += f[e] * f[e];
              }
              const float inv = rsqrtf(warp_sum(ss) / float(p.K) + p.norm_eps);
              for (int c = lane * 8; c < p.K; c += 256) {
                Chunk8<T> v, w;
                v.load_shared(row + c);
                w.load_global(nw + c);
                float f[8], g[8];
                v.to_float(f);
                w.to_float(g);
                T out[8];
#pragma unroll
                for (int e = 0; e < 8; ++e) out[e] = from_f32<T>(f[e] * inv * g[e]);
#pragma unroll
                for (int e = 0; e < 8; ++e) row[c + e] = out[e];
              }
            }
            __syncthreads();
          }
        }
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
            } else {
              a[u].zero();
              b[u].zero();
            }
          }
#pragma unroll
          for (int u = 0; u < U; ++u) {
            const int c = cb + u * 256;
            if (c >= kt) break;
            float fa[8], fb[8];
            a[u].to_float(fa);
            b[u].to_float(fb);
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
        }
      }
      if (!v0) continue;
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        if (m < mt) {
          const float s0 = warp_sum(acc0[m]), s1 = warp_sum(acc1[m]);
          if (lane == 0) {
            OutT* y = Y + int64_t(row0 + m0 + m) * p.ldy;
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
  }
}

template <typename T, typename OutT, GemvEpilogue Epi, int MT, int U>
void launch_mtu(const GemvParams& p, int groups, cudaStream_t s) {
  int kt_max = std::min<int>(p.K, kMaxSmem / (MT * int(sizeof(T))));
  DS_GPU_REQUIRE(!p.norm_weight || kt_max >= p.K, "run_gemv: a fused norm needs the whole row in shared memory");
  DS_GPU_REQUIRE(!p.gate || (p.norm_weight && p.gate_head_dim > 0 && p.gate_head_dim <= 256 &&
                             p.gate_head_dim % 8 == 0 && p.K % p.gate_head_dim == 0 && !p.x_rows),
                 "run_gemv: bad gated-norm prologue");
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
  launch_pdl(kern, grid, kWarps * 32, smem, s, p, kt_max, groups);
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

int choose_gemv_row_groups(int out_cols, int num_slots, int num_sms, bool silu_mul) {
  // aim for >= 6 blocks per SM; fewer, longer-lived warps amortise the x-tile prologue (bench sweep:
  // the batch-1 expert gate/up GEMV is best at 2 groups, the KDA input projection at 1-4)
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
