#include "cuda/kernels/common.cuh"
#include "cuda/kernels/fp8_codec.cuh"
#include "cuda/kernels/latent_cache.h"

namespace ds::gpu {
namespace {

// One warp per token.
template <typename T>
__global__ void latent_cache_write_kernel(LatentCacheWriteParams p) {
  pdl_trigger();
  pdl_wait();
  constexpr int N = Vec16<T>::N;
  int warps = blockDim.x >> 5;
  int t = blockIdx.x * warps + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (t >= p.tokens) return;
  const T* x = static_cast<const T*>(p.kv_a) + int64_t(t) * p.ld_kv_a;
  const T* w = static_cast<const T*>(p.norm_weight);
  T* dst = static_cast<T*>(p.cache) + int64_t(p.cache_rows[t]) * (p.R + p.Dr);
  float ss = 0.f;
  for (int c = lane * N; c < p.R; c += 32 * N) {
    Vec16<T> v;
    v.load(x + c);
    float f[N];
    v.to_float(f);
#pragma unroll
    for (int i = 0; i < N; ++i) ss += f[i] * f[i];
  }
  float inv = rsqrtf(warp_sum(ss) / float(p.R) + p.eps);
  for (int c = lane * N; c < p.R; c += 32 * N) {
    Vec16<T> v, wv;
    v.load(x + c);
    wv.load(w + c);
    float f[N], g[N];
    v.to_float(f);
    wv.to_float(g);
#pragma unroll
    for (int i = 0; i < N; ++i) f[i] = f[i] * inv * g[i];
    v.from_float(f);
    v.store(dst + c);
  }
  for (int c = lane * N; c < p.Dr; c += 32 * N) {
    Vec16<T> v;
    v.load(x + p.R + c);
    v.store(dst + p.R + c);
  }
}

// FP8 rows: one warp per token. The normalised latent and the raw k_pe are computed in fp32 twice (once
// for the row's amax, once to quantize), so nothing is held in registers across the row.
template <typename T>
__global__ void latent_cache_write_fp8_kernel(LatentCacheWriteParams p) {
  pdl_trigger();
  pdl_wait();
  constexpr int N = Vec16<T>::N;
  int warps = blockDim.x >> 5;
  int t = blockIdx.x * warps + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (t >= p.tokens) return;
  const T* x = static_cast<const T*>(p.kv_a) + int64_t(t) * p.ld_kv_a;
  const T* w = static_cast<const T*>(p.norm_weight);
  uint8_t* dst = static_cast<uint8_t*>(p.cache) + int64_t(p.cache_rows[t]) * p.fp8_row_bytes;
  const int D = p.R + p.Dr;
  float ss = 0.f;
  for (int c = lane * N; c < p.R; c += 32 * N) {
    Vec16<T> v;
    v.load(x + c);
    float f[N];
    v.to_float(f);
#pragma unroll
    for (int i = 0; i < N; ++i) ss += f[i] * f[i];
  }
  const float inv = rsqrtf(warp_sum(ss) / float(p.R) + p.eps);
  auto values = [&](int c, float* f) {  // the N values from column c (R is a multiple of N)
    Vec16<T> v;
    v.load(x + c);
    v.to_float(f);
    if (c < p.R) {
      Vec16<T> wv;
      wv.load(w + c);
      float g[N];
      wv.to_float(g);
#pragma unroll
      for (int i = 0; i < N; ++i) f[i] = f[i] * inv * g[i];
    }
  };
  float amax = 0.f;
  for (int c = lane * N; c < D; c += 32 * N) {
    float f[N];
    values(c, f);
#pragma unroll
    for (int i = 0; i < N; ++i) amax = fmaxf(amax, fabsf(f[i]));
  }
  amax = warp_max(amax);
  const float s = amax > 0.f ? __fdiv_rn(amax, 448.f) : 1.f;
  for (int c = lane * N; c < D; c += 32 * N) {
    float f[N];
    values(c, f);
    uint8_t q[N];
#pragma unroll
    for (int i = 0; i < N; ++i) q[i] = to_e4m3(__fdiv_rn(f[i], s));
    if constexpr (N == 8) {
      *reinterpret_cast<uint2*>(dst + c) = *reinterpret_cast<const uint2*>(q);
    } else {
      *reinterpret_cast<uint32_t*>(dst + c) = *reinterpret_cast<const uint32_t*>(q);
    }
  }
  if (lane == 0) *reinterpret_cast<float*>(dst + D) = s;
}

// One warp per destination row; the sequence of a row by binary search over cu_rows.
template <typename T>
__global__ void latent_gather_kernel(LatentGatherParams p) {
  pdl_trigger();
  pdl_wait();
  constexpr int N = Vec16<T>::N;
  const int warps = blockDim.x >> 5;
  const int r = blockIdx.x * warps + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (r >= p.rows) return;
  int s = 0, first = 0;
  if (p.cu_rows) {
    int lo = 0, hi = p.num_seqs - 1;  // the last s with cu_rows[s] - row0 <= r
    while (lo < hi) {
      const int mid = (lo + hi + 1) >> 1;
      if (p.cu_rows[mid] - p.row0 <= r) lo = mid;
      else hi = mid - 1;
    }
    s = lo;
    first = p.cu_rows[s] - p.row0;
  }
  const int64_t pos = p.pos0 + (r - first);
  const int64_t row = int64_t(p.block_tables[int64_t(s) * p.bt_stride + pos / p.block_size]) * p.block_size +
                      pos % p.block_size;
  T* dst = static_cast<T*>(p.dst) + int64_t(r) * p.ld_dst;
  if (p.fp8_row_bytes > 0) {  // 16 values per lane and step, times the row's scale
    const uint8_t* src = static_cast<const uint8_t*>(p.cache) + row * p.fp8_row_bytes;
    const float s = *reinterpret_cast<const float*>(src + p.D);
    for (int c = lane * 16; c < p.D; c += 32 * 16) {
      float f[16];
      from_e4m3x16(*reinterpret_cast<const uint4*>(src + c), f);
#pragma unroll
      for (int i = 0; i < 16; ++i) f[i] = __fmul_rn(f[i], s);
#pragma unroll
      for (int h = 0; h < 16; h += N) {
        Vec16<T> v;
        v.from_float(f + h);
        v.store(dst + c + h);
      }
    }
    return;
  }
  const T* src = static_cast<const T*>(p.cache) + row * p.D;
  for (int c = lane * N; c < p.D; c += 32 * N) {
    Vec16<T> v;
    v.load(src + c);
    v.store(dst + c);
  }
}

}  // namespace

void run_latent_gather(const LatentGatherParams& p0, DType act, const DeviceContext& ctx) {
  LatentGatherParams p = p0;
  if (p.rows == 0) return;
  DS_GPU_REQUIRE(p.cache && p.block_tables && p.dst && p.block_size > 0 && p.num_seqs > 0,
                 "run_latent_gather: bad arguments");
  if (p.ld_dst == 0) p.ld_dst = p.D;
  DS_GPU_REQUIRE(p.D % 8 == 0 && p.ld_dst % 8 == 0, "run_latent_gather: D and ld_dst must be multiples of 8");
  DS_GPU_REQUIRE(p.fp8_row_bytes == 0 || (p.D % 16 == 0 && p.fp8_row_bytes >= p.D + 4 && p.fp8_row_bytes % 16 == 0),
                 "run_latent_gather: FP8 rows need D a multiple of 16 and 16-byte rows holding D values + a scale");
  if (!p.cu_rows) p.num_seqs = 1;
  constexpr int kWarps = 8;
  dispatch_act(act, [&]<typename T>() {
    launch_pdl(latent_gather_kernel<T>, ceil_div(p.rows, kWarps), kWarps * 32, 0, ctx, p);
  });
  DS_CUDA_CHECK_LAUNCH();
}

void run_latent_cache_write(const LatentCacheWriteParams& p, DType act, const DeviceContext& ctx) {
  if (p.tokens == 0) return;
  DS_GPU_REQUIRE(p.R % 8 == 0 && p.Dr % 8 == 0, "run_latent_cache_write: R and Dr must be multiples of 8");
  DS_GPU_REQUIRE(p.fp8_row_bytes == 0 || ((p.R + p.Dr) % 16 == 0 && p.fp8_row_bytes >= p.R + p.Dr + 4 &&
                                          p.fp8_row_bytes % 16 == 0),
                 "run_latent_cache_write: FP8 rows need R + Dr a multiple of 16 and 16-byte rows with the scale");
  constexpr int kWarps = 4;
  dispatch_act(act, [&]<typename T>() {
    if (p.fp8_row_bytes > 0)
      launch_pdl(latent_cache_write_fp8_kernel<T>, ceil_div(p.tokens, kWarps), kWarps * 32, 0, ctx, p);
    else
      launch_pdl(latent_cache_write_kernel<T>, ceil_div(p.tokens, kWarps), kWarps * 32, 0, ctx, p);
  });
  DS_CUDA_CHECK_LAUNCH();
}

}  // namespace ds::gpu
