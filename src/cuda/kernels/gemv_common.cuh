// Shared device pieces of the GEMV kernels (gemv.cu: the row-pair kernels and run_gemv's dispatch;
// gemv_async.cu: cp.async weight streaming at one row per slot; gemv_block.cu: the block-reduced kernels,
// split-K and the MoE down projection + combine). Internal to src/cuda/kernels.
#pragma once
#include "cuda/kernels/common.cuh"
#include "cuda/kernels/fp8_codec.cuh"
#include "cuda/kernels/gemv.h"

namespace ds::gpu::gemv_detail {

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

// Item j of a warp of the row-pair kernels, which streams `pairs` row pairs as `iters` items of 32 x kE x U
// elements per row each: the first output column c0, this lane's first element cb, and the two weight
// rows (Store/Accumulate: columns c0 and c0 + 1, clamped to N; SiluMul: gate row c0 and up row N + c0).
// False past the warp's last item or past N.
// kE: weights per lane chunk (8; 16 for FP8 bytes).
template <typename T, bool kPair, int U, int kE = 8>
__device__ __forceinline__ bool row_pair_item(const GemvParams& p, const T* W, int pairs, int iters, int j,
                                              const T*& w0, const T*& w1, int& cb, int& c0) {
  constexpr int kCols = kPair ? 1 : 2;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = j / iters;
  c0 = ((blockIdx.x * pairs + g) * kWarps + warp) * kCols;
  cb = (j - g * iters) * 32 * kE * U + lane * kE;
  if (j >= pairs * iters || c0 >= p.N) return false;
  w0 = W + int64_t(c0) * p.K;
  w1 = W + int64_t(kPair ? p.N + c0 : min(c0 + 1, p.N - 1)) * p.K;
  return true;
}

// cp.async of 16 bytes into shared memory (L2 only), its commit group, and the wait for all but N groups.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  const unsigned sa = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(sa), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N)); }

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

// FP8 weights: acc += scale * (16 e4m3 weights . 16 x values) for the tile's rows, at tile column c (one
// 16-byte chunk of each of the two rows; the chunk lies in one scale block).
template <typename T, int MT>
__device__ __forceinline__ void fma_fp8_chunk(const uint4& a, const uint4& b, float sa, float sb, const T* xs, int kt_max,
                                      int c, int mt, float* acc0, float* acc1) {
  float fa[16], fb[16];
  from_e4m3x16(a, fa);
  from_e4m3x16(b, fb);
#pragma unroll
  for (int m = 0; m < MT; ++m) {
    if (m < mt) {
      Chunk8<T> x0, x1;
      x0.load_shared(xs + m * kt_max + c);
      x1.load_shared(xs + m * kt_max + c + 8);
      float fx[16];
      x0.to_float(fx);
      x1.to_float(fx + 8);
      float s0 = 0.f, s1 = 0.f;
#pragma unroll
      for (int e = 0; e < 16; ++e) {
        s0 = fmaf(fa[e], fx[e], s0);
        s1 = fmaf(fb[e], fx[e], s1);
      }
      acc0[m] = fmaf(s0, sa, acc0[m]);
      acc1[m] = fmaf(s1, sb, acc1[m]);
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


// The rows [row0, row0 + rows) of x that group `group` multiplies (read after PDL's wait): false when
// the group is inactive or has none.
__device__ __forceinline__ bool group_rows(const GemvParams& p, int group, int& row0, int& rows) {
  if (p.num_active && group >= *p.num_active) return false;
  row0 = 0;
  rows = p.M;
  if (p.group_start) {
    row0 = p.group_start[group];
    rows = p.group_start[group + 1] - row0;
  }
  return rows > 0;
}

// The start of a one-row-per-group weight stream (gemv_async.cu, gemv_fp8_mma.cu): the group's matrix
// (set_matrix(m)) and its first kAhead items (issue(j), one cp.async commit group each) are requested before
// PDL's wait when the host knows the matrix (dense weights, or the known group: weights are immutable), else
// after it. False, with nothing left in flight, when the group is inactive or has no rows.
template <int kAhead, typename SetMatrix, typename Issue>
__device__ __forceinline__ bool start_group_stream(const GemvParams& p, int group, int& row0, int& rows,
                                                   const SetMatrix& set_matrix, const Issue& issue) {
  const bool early = !p.group_weight || group == p.known_group;
  if (early) {
    set_matrix(p.group_weight ? p.known_weight : group);
#pragma unroll
    for (int j = 0; j < kAhead; ++j) issue(j);
  }
  pdl_wait();
  if (!group_rows(p, group, row0, rows)) {
    cp_async_wait<0>();  // nothing left in flight into this block's shared memory
    return false;
  }
  if (!early) {
    set_matrix(p.group_weight[group]);
#pragma unroll
    for (int j = 0; j < kAhead; ++j) issue(j);
  }
  return true;
}

// Sums two per-warp partial sums over the block's warps (one shared pair per warp); the totals are
// valid in thread 0.
__device__ __forceinline__ void block_sum2(float& a, float& b, float (*part)[2]) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nwarps = blockDim.x >> 5;
  a = warp_sum(a);
  b = warp_sum(b);
  if (lane == 0) {
    part[warp][0] = a;
    part[warp][1] = b;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    a = b = 0.f;
    for (int w = 0; w < nwarps; ++w) {
      a += part[w][0];
      b += part[w][1];
    }
  }
}

// The specialised kernels: each launches and returns true when it applies to p (run_gemv's dispatch).
bool run_gemv_async(const GemvParams& p, DType act, int num_sms, const DeviceContext& ctx);
bool run_gemv_splitk(const GemvParams& p, DType act, int num_sms, const DeviceContext& ctx);
bool splitk_applies(const GemvParams& p, int num_sms);
bool run_gemv_small_k(const GemvParams& p, DType act, const DeviceContext& ctx);
// Sets the shared-memory limit of every instance of the asynchronous kernel (configure_gemv).
void configure_gemv_async();
// FP8 weights at one row per group on the tensor cores (gemv_fp8_mma.cu; switches.fp8_mma_gemv): launches
// and returns true when it applies (fp8_mma_gemv_applies, fp8_mma_down_combine_applies: gemv.h).
bool run_gemv_fp8_mma(const GemvParams& p, DType act, const DeviceContext& ctx);
bool run_moe_down_combine_fp8_mma(const MoeDownCombineParams& p, DType act, const DeviceContext& ctx);
void configure_gemv_fp8_mma();
// FP8 weights (p.w_scale set): every case run_gemv takes (gemv_fp8.cu).
void run_gemv_fp8(const GemvParams& p, DType act, const DeviceContext& ctx);
void run_moe_down_combine_fp8(const MoeDownCombineParams& p, DType act, const DeviceContext& ctx);
void configure_gemv_fp8();
// INT4 weights (p.w_int4): every case run_gemv takes (gemv_int4.cu).
void run_gemv_int4(const GemvParams& p, DType act, const DeviceContext& ctx);
void run_moe_down_combine_int4(const MoeDownCombineParams& p, DType act, const DeviceContext& ctx);
void configure_gemv_int4();
// FP8 or INT4 experts' batch-1 down projection + combine in one wave of blocks staging their columns' rows in
// shared memory (moe_down_combine_staged.cu; switches.down_combine_staged): launches and returns true when it applies.
bool run_moe_down_combine_staged(const MoeDownCombineParams& p, DType act, const DeviceContext& ctx);
void configure_moe_down_combine_staged(const DeviceContext& ctx);
// One token's MoE gate/up (SiLU-mul) with FP8 or INT4 experts through a shared-memory ring, one block an SM
// (moe_gate_up_staged.cu; switches.gate_up_staged): launches and returns true when it applies
// (moe_gate_up_staged_applies, gemv.h).
bool run_moe_gate_up_staged(const GemvParams& p, DType act, const DeviceContext& ctx);
void configure_moe_gate_up_staged(const DeviceContext& ctx);

}  // namespace ds::gpu::gemv_detail
