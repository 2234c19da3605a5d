#include "cuda/cuda_check.h"
#include "cuda/kernels/common.cuh"
#include "cuda/kernels/fp8_codec.cuh"
#include "cuda/kernels/norm.h"

namespace ds::gpu {
namespace {

// Rows of up to 32 x kRowVecs 16-byte vectors (3,072 bf16) are held in registers: every load of the row
// and the weights is in flight at once (a loop over a 2,304-wide row waited on 9 loads in turn, twice).
constexpr int kRowVecs = 12;

// One warp per row, 16-byte vectors; rows too wide for registers take two passes (the second hits L1/L2).
template <typename T>
__global__ void rmsnorm_kernel(RmsNormParams p) {
  pdl_trigger();
  constexpr int N = Vec16<T>::N;
  int warps = blockDim.x >> 5;
  int r = blockIdx.x * warps + (threadIdx.x >> 5);
  int lane = threadIdx.x & 31;
  const T* w = static_cast<const T*>(p.weight);
  if (p.dim <= 32 * N * kRowVecs) {
    Vec16<T> wv[kRowVecs], v[kRowVecs];
#pragma unroll
    for (int i = 0; i < kRowVecs; ++i)  // the weights are immutable: loaded before the wait
      if ((lane + 32 * i) * N < p.dim) wv[i].load(w + (lane + 32 * i) * N);
    pdl_wait();
    if (r >= p.rows) return;
    const int64_t src = p.row_index ? p.row_index[r] : r;
    const T* x = static_cast<const T*>(p.x) + src * p.ldx;
    T* y = static_cast<T*>(p.y) + int64_t(r) * p.ldy;
#pragma unroll
    for (int i = 0; i < kRowVecs; ++i)
      if ((lane + 32 * i) * N < p.dim) v[i].load(x + (lane + 32 * i) * N);
    float ss = 0.f;
#pragma unroll
    for (int i = 0; i < kRowVecs; ++i)
      if ((lane + 32 * i) * N < p.dim) {
        float f[N];
        v[i].to_float(f);
#pragma unroll
        for (int j = 0; j < N; ++j) ss += f[j] * f[j];
      }
    ss = warp_sum(ss);
    const float inv = rsqrtf(ss / float(p.dim) + p.eps);
#pragma unroll
    for (int i = 0; i < kRowVecs; ++i) {
      const bool in_row = (lane + 32 * i) * N < p.dim;  // (a whole 16-lane k block in or out: dim % 128 == 0)
      if (in_row) {
        float f[N], g[N];
        v[i].to_float(f);
        wv[i].to_float(g);
#pragma unroll
        for (int j = 0; j < N; ++j) f[j] = f[j] * inv * g[j];
        v[i].from_float(f);
        v[i].store(y + (lane + 32 * i) * N);
      }
      if constexpr (N == 8) {  // the fused x split, from the values as stored (bf16), as run_x_split of y
        if (p.split && 32 * i * N < p.dim) {
          float f[8] = {};
          if (in_row) v[i].to_float(f);
          x_split_chunk_store(f, in_row, static_cast<uint8_t*>(p.split), p.rows, p.dim, r, lane + 32 * i);
        }
      }
    }
    return;
  }
  pdl_wait();
  if (r >= p.rows) return;
  int64_t src = p.row_index ? p.row_index[r] : r;
  const T* x = static_cast<const T*>(p.x) + src * p.ldx;
  T* y = static_cast<T*>(p.y) + int64_t(r) * p.ldy;
  float ss = 0.f;
  for (int c = lane * N; c < p.dim; c += 32 * N) {
    Vec16<T> v;
    v.load(x + c);
    float f[N];
    v.to_float(f);
#pragma unroll
    for (int i = 0; i < N; ++i) ss += f[i] * f[i];
  }
  ss = warp_sum(ss);
  float inv = rsqrtf(ss / float(p.dim) + p.eps);
  for (int c = lane * N; c < p.dim; c += 32 * N) {
    Vec16<T> v, wv;
    v.load(x + c);
    wv.load(w + c);
    float f[N], g[N];
    v.to_float(f);
    wv.to_float(g);
#pragma unroll
    for (int i = 0; i < N; ++i) f[i] = f[i] * inv * g[i];
    v.from_float(f);
    v.store(y + c);
  }
}

// One warp per (token, head).
template <typename T>
__global__ void gated_rmsnorm_kernel(GatedRmsNormParams p) {
  pdl_trigger();
  pdl_wait();
  int warps = blockDim.x >> 5;
  int64_t item = int64_t(blockIdx.x) * warps + (threadIdx.x >> 5);
  int lane = threadIdx.x & 31;
  if (item >= int64_t(p.tokens) * p.heads) return;
  int64_t t = item / p.heads;
  int h = int(item % p.heads);
  int64_t width = int64_t(p.heads) * p.head_dim;
  const T* o = static_cast<const T*>(p.o) + t * width + int64_t(h) * p.head_dim;
  const T* g = static_cast<const T*>(p.gate) + t * p.ldg + int64_t(h) * p.head_dim;
  const T* w = static_cast<const T*>(p.weight);
  T* y = static_cast<T*>(p.y) + t * width + int64_t(h) * p.head_dim;
  float ss = 0.f;
  for (int c = lane; c < p.head_dim; c += 32) {
    float v = to_f32(o[c]);
    ss += v * v;
  }
  ss = warp_sum(ss);
  float inv = rsqrtf(ss / float(p.head_dim) + p.eps);
  for (int c = lane; c < p.head_dim; c += 32) {
    float v = to_f32(o[c]) * inv * to_f32(w[c]);
    float gg = to_f32(g[c]);
    y[c] = from_f32<T>(v * (1.f / (1.f + expf(-gg))));
  }
}

// 4 contiguous elements of T as floats (8 bytes of bf16, 16 of fp32).
template <typename T> __device__ __forceinline__ void load4(const T* ptr, float* f) {
  if constexpr (sizeof(T) == 2) {
    const uint2 u = *reinterpret_cast<const uint2*>(ptr);
    f[0] = __uint_as_float(u.x << 16);
    f[1] = __uint_as_float(u.x & 0xffff0000u);
    f[2] = __uint_as_float(u.y << 16);
    f[3] = __uint_as_float(u.y & 0xffff0000u);
  } else {
    const float4 v = *reinterpret_cast<const float4*>(ptr);
    f[0] = v.x, f[1] = v.y, f[2] = v.z, f[3] = v.w;
  }
}
template <typename T> __device__ __forceinline__ void store4(T* ptr, const float* f) {
  if constexpr (sizeof(T) == 2) {
    const __nv_bfloat162 a = __floats2bfloat162_rn(f[0], f[1]), b = __floats2bfloat162_rn(f[2], f[3]);
    *reinterpret_cast<uint2*>(ptr) = make_uint2(*reinterpret_cast<const uint32_t*>(&a), *reinterpret_cast<const uint32_t*>(&b));
  }
  else *reinterpret_cast<float4*>(ptr) = make_float4(f[0], f[1], f[2], f[3]);
}

// The same with 4 contiguous elements a lane (head_dim a multiple of 128: one 128-value pass a warp reads
// 256 or 512 contiguous bytes with one instruction an array; the scalar form above took 117 us for 8,192
// tokens x 32 heads, 40% of the bytes' time, PERF.md session 14), head_dim <= 512.
template <typename T>
__global__ void gated_rmsnorm_vec_kernel(GatedRmsNormParams p) {
  pdl_trigger();
  pdl_wait();
  constexpr int kMax = 4;  // 128-value passes
  const int warps = blockDim.x >> 5, lane = threadIdx.x & 31;
  const int64_t item = int64_t(blockIdx.x) * warps + (threadIdx.x >> 5);
  if (item >= int64_t(p.tokens) * p.heads) return;
  const int64_t t = item / p.heads;
  const int h = int(item % p.heads), passes = p.head_dim / 128;
  const int64_t width = int64_t(p.heads) * p.head_dim;
  const T* o = static_cast<const T*>(p.o) + t * width + int64_t(h) * p.head_dim;
  const T* g = static_cast<const T*>(p.gate) + t * p.ldg + int64_t(h) * p.head_dim;
  const T* w = static_cast<const T*>(p.weight);
  T* y = static_cast<T*>(p.y) + t * width + int64_t(h) * p.head_dim;
  float v[kMax][4];
  float ss = 0.f;
#pragma unroll
  for (int i = 0; i < kMax; ++i)
    if (i < passes) {
      load4(o + 128 * i + 4 * lane, v[i]);
#pragma unroll
      for (int e = 0; e < 4; ++e) ss += v[i][e] * v[i][e];
    }
  ss = warp_sum(ss);
  const float inv = rsqrtf(ss / float(p.head_dim) + p.eps);
#pragma unroll
  for (int i = 0; i < kMax; ++i)
    if (i < passes) {
      float gw[4], ww[4], out[4];
      load4(g + 128 * i + 4 * lane, gw);
      load4(w + 128 * i + 4 * lane, ww);
#pragma unroll
      for (int e = 0; e < 4; ++e) out[e] = v[i][e] * inv * ww[e] * (1.f / (1.f + expf(-gw[e])));
      store4(y + 128 * i + 4 * lane, out);
    }
}

}  // namespace

bool rmsnorm_split_fits(int dim) { return dim > 0 && dim % 128 == 0 && dim <= 32 * 8 * kRowVecs; }

void run_rmsnorm(const RmsNormParams& p, DType act, const DeviceContext& ctx) {
  if (p.rows == 0) return;
  DS_GPU_REQUIRE(p.dim % 8 == 0, "run_rmsnorm: dim " + std::to_string(p.dim) + " must be a multiple of 8");
  DS_GPU_REQUIRE(!p.split || (act == DType::BF16 && rmsnorm_split_fits(p.dim)),
                 "run_rmsnorm: the fused x split needs bf16 rows of a multiple of 128 values, at most 3,072");
  constexpr int kWarps = 4;
  dispatch_act(act, [&]<typename T>() {
    launch_pdl(rmsnorm_kernel<T>, ceil_div(p.rows, kWarps), kWarps * 32, 0, ctx, p);
  });
  DS_CUDA_CHECK_LAUNCH();
}

void run_gated_rmsnorm(const GatedRmsNormParams& p, DType act, const DeviceContext& ctx) {
  if (p.tokens == 0) return;
  constexpr int kWarps = 8;
  dispatch_act(act, [&]<typename T>() {
    constexpr uintptr_t kAlign = 4 * sizeof(T);
    const bool vec = ctx.switches.prefill_vec && p.head_dim % 128 == 0 && p.head_dim <= 512 && p.ldg % 4 == 0 &&
                     reinterpret_cast<uintptr_t>(p.o) % kAlign == 0 && reinterpret_cast<uintptr_t>(p.gate) % kAlign == 0 &&
                     reinterpret_cast<uintptr_t>(p.weight) % kAlign == 0 && reinterpret_cast<uintptr_t>(p.y) % kAlign == 0;
    if (vec)
      launch_pdl(gated_rmsnorm_vec_kernel<T>, ceil_div(int64_t(p.tokens) * p.heads, kWarps), kWarps * 32, 0, ctx, p);
    else
      launch_pdl(gated_rmsnorm_kernel<T>, ceil_div(int64_t(p.tokens) * p.heads, kWarps), kWarps * 32, 0, ctx, p);
  });
  DS_CUDA_CHECK_LAUNCH();
}

}  // namespace ds::gpu
