#include "cuda/kernels/common.cuh"
#include "cuda/kernels/conv1d.cuh"
#include "cuda/kernels/delta_gate.h"

namespace ds::gpu {
namespace {

template <typename T>
__device__ __forceinline__ void kda_gate_one(const KdaGateParams& p, int64_t i) {
  int width = p.heads * p.head_dim;
  if (i >= int64_t(p.tokens) * width) return;
  int64_t t = i / width;
  int c = int(i % width), h = c / p.head_dim;
  float u = to_f32(static_cast<const T*>(p.f)[t * p.ldf + c]) + p.dt_bias[c];
  float sp = u > 20.f ? u : log1pf(expf(u));
  p.g[t * width + c] = -expf(p.A_log[h]) * sp;
  if (c % p.head_dim == 0) {
    float b = to_f32(static_cast<const T*>(p.b)[t * p.ldb + h]);
    p.beta[t * p.heads + h] = 1.f / (1.f + expf(-b));
  }
}

// Prefill form: 8 channels a thread (16-byte loads of f, two float4 stores of g), 32-bit indices; the same
// arithmetic as kda_gate_one. Needs heads*head_dim, ldf multiples of 8, f 16-byte aligned, g 32-byte aligned.
template <typename T>
__global__ void kda_gate_vec_kernel(KdaGateParams p) {
  pdl_trigger();
  pdl_wait();
  const int width = p.heads * p.head_dim, groups = width / 8;
  const int i = int(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= p.tokens * groups) return;
  const int t = i / groups, c = (i % groups) * 8;
  float f[8];
  Vec16<T> a;
  a.load(static_cast<const T*>(p.f) + int64_t(t) * p.ldf + c);
  a.to_float(f);
  if constexpr (sizeof(T) == 4) {
    Vec16<T> b;
    b.load(static_cast<const T*>(p.f) + int64_t(t) * p.ldf + c + 4);
    b.to_float(f + 4);
  }
  float g[8];
#pragma unroll
  for (int e = 0; e < 8; ++e) {
    const float u = f[e] + p.dt_bias[c + e];
    const float sp = u > 20.f ? u : log1pf(expf(u));
    g[e] = -expf(p.A_log[(c + e) / p.head_dim]) * sp;
  }
  float4* dst = reinterpret_cast<float4*>(p.g + int64_t(t) * width + c);
  dst[0] = make_float4(g[0], g[1], g[2], g[3]);
  dst[1] = make_float4(g[4], g[5], g[6], g[7]);
  if (c % p.head_dim == 0) {
    const int h = c / p.head_dim;
    const float b = to_f32(static_cast<const T*>(p.b)[int64_t(t) * p.ldb + h]);
    p.beta[int64_t(t) * p.heads + h] = 1.f / (1.f + expf(-b));
  }
}

template <typename T>
__global__ void kda_gate_kernel(KdaGateParams p) {
  pdl_trigger();
  pdl_wait();
  kda_gate_one<T>(p, int64_t(blockIdx.x) * blockDim.x + threadIdx.x);
}

// The first `conv_blocks` blocks run the decode convolution, the rest the gate (one launch).
template <typename T>
__global__ void kda_gate_conv_kernel(KdaGateParams g, Conv1dParams c, unsigned conv_blocks) {
  pdl_trigger();
  pdl_wait();
  if (blockIdx.x < conv_blocks) conv_decode_one<T>(c, int64_t(blockIdx.x) * blockDim.x + threadIdx.x);
  else kda_gate_one<T>(g, int64_t(blockIdx.x - conv_blocks) * blockDim.x + threadIdx.x);
}

}  // namespace

void run_kda_gate(const KdaGateParams& p, DType act, const DeviceContext& ctx) {
  if (p.tokens == 0) return;
  const int64_t elems = int64_t(p.tokens) * p.heads * p.head_dim;
  const bool vec = ctx.switches.prefill_vec && p.head_dim % 8 == 0 && p.ldf % 8 == 0 && reinterpret_cast<uintptr_t>(p.f) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(p.g) % 32 == 0 && elems / 8 < (int64_t(1) << 31) - 256;
  dispatch_act(act, [&]<typename T>() {
    if (vec) launch_pdl(kda_gate_vec_kernel<T>, ceil_div(elems / 8, 256), 256, 0, ctx, p);
    else launch_pdl(kda_gate_kernel<T>, ceil_div(elems, 256), 256, 0, ctx, p);
  });
  DS_CUDA_CHECK_LAUNCH();
}

void run_kda_gate_and_conv_decode(const KdaGateParams& g, const Conv1dParams& c, DType act, const DeviceContext& ctx) {
  if (g.tokens == 0) return;
  DS_GPU_REQUIRE(c.kernel >= 1 && c.kernel <= 8, "run_kda_gate_and_conv_decode: kernel size out of range");
  unsigned cb = ceil_div(int64_t(c.num_seqs) * c.channels, 256);
  unsigned gb = ceil_div(int64_t(g.tokens) * g.heads * g.head_dim, 256);
  dispatch_act(act, [&]<typename T>() { launch_pdl(kda_gate_conv_kernel<T>, cb + gb, 256, 0, ctx, g, c, cb); });
  DS_CUDA_CHECK_LAUNCH();
}

}  // namespace ds::gpu
