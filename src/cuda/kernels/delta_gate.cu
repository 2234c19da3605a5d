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
  dispatch_act(act, [&]<typename T>() {
    launch_pdl(kda_gate_kernel<T>, ceil_div(int64_t(p.tokens) * p.heads * p.head_dim, 256), 256, 0, ctx, p);
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
