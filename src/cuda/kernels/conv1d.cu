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

// Vector form: one thread per (8 channels, run of kRun tokens). The window of the kernel-1 earlier inputs
// stays in registers while the run slides over its tokens (reloaded, from the chunk or the state, at the
// run's start and where a new sequence begins), so each input is read about once, 16 bytes at a time, with
// no 64-bit division a channel. Needs channels, ldx multiples of 8 and 16-byte aligned x, y and state
// (run_conv1d_prefill checks; otherwise the scalar kernel above). 4.3x fewer instructions per output than
// conv_prefill_kernel, whose 8,192-token chunk took 1.08 ms (Nsight Compute, PERF.md session 14).
constexpr int kRun = 16;

template <typename T> struct Vec8 {  // 8 elements of T as floats
  float v[8];
  __device__ __forceinline__ void load(const T* ptr) {
    if constexpr (sizeof(T) == 2) {
      Vec16<T> a;
      a.load(ptr);
      a.to_float(v);
    } else {
      Vec16<T> a, b;
      a.load(ptr);
      b.load(ptr + 4);
      a.to_float(v);
      b.to_float(v + 4);
    }
  }
  __device__ __forceinline__ void store(T* ptr) const {
    if constexpr (sizeof(T) == 2) {
      Vec16<T> a;
      a.from_float(v);
      a.store(ptr);
    } else {
      Vec16<T> a, b;
      a.from_float(v);
      b.from_float(v + 4);
      a.store(ptr);
      b.store(ptr + 4);
    }
  }
};

// KM: the taps compiled for (>= kernel; 4, the model's, or kMaxKernel), so every index is a constant.
template <typename T, int KM>
__global__ void conv_prefill_vec_kernel(Conv1dParams p) {
  pdl_trigger();
  pdl_wait();
  const int groups = p.channels / 8;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int run = int(i / groups), c = int(i % groups) * 8;
  const int t0 = run * kRun;
  if (t0 >= p.tokens) return;
  const int t1 = min(p.tokens, t0 + kRun), K = p.kernel;
  const T* x = static_cast<const T*>(p.x);
  // wd[d]: the tap on the input d positions back (tap K-1-d of the weight row), 0 past the kernel
  float wd[KM][8];
#pragma unroll
  for (int d = 0; d < KM; ++d)
#pragma unroll
    for (int e = 0; e < 8; ++e)
      wd[d][e] = d < K ? to_f32(static_cast<const T*>(p.weight)[int64_t(c + e) * K + (K - 1 - d)]) : 0.f;
  // win[d - 1]: the input d positions before the current token (d = 1 .. K-1; zeros past it)
  Vec8<T> win[KM > 1 ? KM - 1 : 1];
  int s = -1, start = 0;
  for (int t = t0; t < t1; ++t) {
    const int ts = p.token_seq[t];
    if (ts != s) {  // the run's first token or a new sequence: the window from the chunk and the state
      s = ts;
      start = p.seq_start[s];
      const T* st = static_cast<const T*>(p.state) + int64_t(p.slots[s]) * (K - 1) * p.channels;
      const int pos = t - start;
#pragma unroll
      for (int d = 1; d < KM; ++d) {
        if (d >= K) {
#pragma unroll
          for (int e = 0; e < 8; ++e) win[d - 1].v[e] = 0.f;
        } else if (pos - d >= 0) {
          win[d - 1].load(x + int64_t(t - d) * p.ldx + c);
        } else {
          win[d - 1].load(st + int64_t(K - 1 + pos - d) * p.channels + c);
        }
      }
    }
    Vec8<T> cur, out;
    cur.load(x + int64_t(t) * p.ldx + c);
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      float acc = wd[0][e] * cur.v[e];
#pragma unroll
      for (int d = 1; d < KM; ++d) acc += wd[d][e] * win[d - 1].v[e];
      out.v[e] = siluf_(acc);
    }
    out.store(static_cast<T*>(p.y) + int64_t(t) * p.channels + c);
#pragma unroll
    for (int d = KM - 2; d >= 1; --d) win[d] = win[d - 1];
    if constexpr (KM > 1) win[0] = cur;
  }
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

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

}  // namespace

void run_conv1d_prefill(const Conv1dParams& p, DType act, const DeviceContext& ctx) {
  if (p.tokens == 0) return;
  DS_GPU_REQUIRE(p.kernel >= 1 && p.kernel <= kMaxKernel, "run_conv1d_prefill: kernel size out of range");
  dispatch_act(act, [&]<typename T>() {
    const bool vec = ctx.switches.prefill_vec && p.channels % 8 == 0 && p.ldx % 8 == 0 && aligned16(p.x) && aligned16(p.y) && aligned16(p.state);
    const int64_t threads = ceil_div(int64_t(p.tokens), kRun) * (p.channels / 8);
    if (vec && p.kernel <= 4)
      launch_pdl(conv_prefill_vec_kernel<T, 4>, ceil_div(threads, 256), 256, 0, ctx, p);
    else if (vec)
      launch_pdl(conv_prefill_vec_kernel<T, kMaxKernel>, ceil_div(threads, 256), 256, 0, ctx, p);
    else
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
