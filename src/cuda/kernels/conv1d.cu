#include "cuda/kernels/common.cuh"
#include "cuda/kernels/conv1d.cuh"

namespace ds::gpu {
namespace {

constexpr int kMaxKernel = 8;

// One thread per (token, channel): reads up to kernel-1 earlier inputs from the chunk or the state.
template <typename T>
__global__ void conv_prefill_kernel(Conv1dParams p) {
  pdl_trigger();
  pdl_wait();
  int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= int64_t(p.tokens) * p.channels) return;
  int64_t t = i / p.channels;
  int c = int(i % p.channels);
  int s = p.token_seq[t];
  int start = p.seq_start[s];
  int pos = int(t) - start;
  const T* x = static_cast<const T*>(p.x);
  const T* w = static_cast<const T*>(p.weight) + int64_t(c) * p.kernel;
  const T* st = static_cast<const T*>(p.state) + int64_t(p.slots[s]) * (p.kernel - 1) * p.channels;
  float acc = 0.f;
  for (int j = 0; j < p.kernel; ++j) {
    int q = pos - (p.kernel - 1) + j;  // position of tap j within the chunk (negative: from the state)
    float v = q >= 0 ? to_f32(x[int64_t(start + q) * p.ldx + c]) : to_f32(st[int64_t(p.kernel - 1 + q) * p.channels + c]);
    acc += to_f32(w[j]) * v;
  }
  static_cast<T*>(p.y)[t * p.channels + c] = from_f32<T>(siluf_(acc));
}

// One thread per (sequence, channel): the new tail is the last kernel-1 inputs of (old tail ++ chunk).
template <typename T>
__global__ void conv_state_update_kernel(Conv1dParams p) {
  pdl_trigger();
  pdl_wait();
  int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= int64_t(p.num_seqs) * p.channels) return;
  int s = int(i / p.channels), c = int(i % p.channels);
  int start = p.seq_start[s], n = p.seq_start[s + 1] - start;
  if (n == 0) return;
  const T* x = static_cast<const T*>(p.x);
  T* st = static_cast<T*>(p.state) + int64_t(p.slots[s]) * (p.kernel - 1) * p.channels;
  int w = p.kernel - 1;
  for (int j = 0; j < w; ++j) {  // increasing j reads old entries j + n > j not yet overwritten
    int q = n - w + j;
    T v = q >= 0 ? x[int64_t(start + q) * p.ldx + c] : st[int64_t(j + n) * p.channels + c];
    st[int64_t(j) * p.channels + c] = v;
  }
}

template <typename T>
__global__ void conv_decode_kernel(Conv1dParams p) {
  pdl_trigger();
  pdl_wait();
  conv_decode_one<T>(p, int64_t(blockIdx.x) * blockDim.x + threadIdx.x);
}

}  // namespace

void run_conv1d_prefill(const Conv1dParams& p, DType act, const DeviceContext& ctx) {
  if (p.tokens == 0) return;
  DS_GPU_REQUIRE(p.kernel >= 1 && p.kernel <= kMaxKernel, "run_conv1d_prefill: kernel size out of range");
  dispatch_act(act, [&]<typename T>() {
    launch_pdl(conv_prefill_kernel<T>, ceil_div(int64_t(p.tokens) * p.channels, 256), 256, 0, ctx, p);
    if (p.kernel > 1)
      launch_pdl(conv_state_update_kernel<T>, ceil_div(int64_t(p.num_seqs) * p.channels, 256), 256, 0, ctx, p);
  });
  DS_CUDA_CHECK_LAUNCH();
}

void run_conv1d_decode(const Conv1dParams& p, DType act, const DeviceContext& ctx) {
  if (p.num_seqs == 0) return;
  DS_GPU_REQUIRE(p.kernel >= 1 && p.kernel <= kMaxKernel, "run_conv1d_decode: kernel size out of range");
  dispatch_act(act, [&]<typename T>() {
    launch_pdl(conv_decode_kernel<T>, ceil_div(int64_t(p.num_seqs) * p.channels, 256), 256, 0, ctx, p);
  });
  DS_CUDA_CHECK_LAUNCH();
}

}  // namespace ds::gpu
