#include "cuda/kernels/common.cuh"
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

}  // namespace

void run_latent_cache_write(const LatentCacheWriteParams& p, DType act, const DeviceContext& ctx) {
  if (p.tokens == 0) return;
  DS_GPU_REQUIRE(p.R % 8 == 0 && p.Dr % 8 == 0, "run_latent_cache_write: R and Dr must be multiples of 8");
  constexpr int kWarps = 4;
  dispatch_act(act, [&]<typename T>() {
    launch_pdl(latent_cache_write_kernel<T>, ceil_div(p.tokens, kWarps), kWarps * 32, 0, ctx, p);
  });
  DS_CUDA_CHECK_LAUNCH();
}

}  // namespace ds::gpu
