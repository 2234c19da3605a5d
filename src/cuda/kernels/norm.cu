#include "cuda/cuda_check.h"
#include "cuda/kernels/common.cuh"
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
    for (int i = 0; i < kRowVecs; ++i)
      if ((lane + 32 * i) * N < p.dim) {
        float f[N], g[N];
        v[i].to_float(f);
        wv[i].to_float(g);
#pragma unroll
        for (int j = 0; j < N; ++j) f[j] = f[j] * inv * g[j];
        v[i].from_float(f);
        v[i].store(y + (lane + 32 * i) * N);
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

}  // namespace

void run_rmsnorm(const RmsNormParams& p, DType act, const DeviceContext& ctx) {
  if (p.rows == 0) return;
  DS_GPU_REQUIRE(p.dim % 8 == 0, "run_rmsnorm: dim " + std::to_string(p.dim) + " must be a multiple of 8");
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
    launch_pdl(gated_rmsnorm_kernel<T>, ceil_div(int64_t(p.tokens) * p.heads, kWarps), kWarps * 32, 0, ctx, p);
  });
  DS_CUDA_CHECK_LAUNCH();
}

}  // namespace ds::gpu
