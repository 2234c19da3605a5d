// Device body of the single-token (decode) short convolution, shared by conv1d.cu and the fused
// KDA gate + conv kernel in delta_gate.cu.
#pragma once
#include "cuda/kernels/common.cuh"
#include "cuda/kernels/conv1d.h"

namespace ds::gpu {

// Element i = (sequence, channel): window = [tail (kernel-1 raw inputs) ; x], y = silu(w . window),
// tail shifted by one with x appended.
template <typename T>
__device__ __forceinline__ void conv_decode_one(const Conv1dParams& p, int64_t i) {
  if (i >= int64_t(p.num_seqs) * p.channels) return;
  int s = int(i / p.channels), c = int(i % p.channels);
  const T* w = static_cast<const T*>(p.weight) + int64_t(c) * p.kernel;
  T* st = static_cast<T*>(p.state) + int64_t(p.slots[s]) * (p.kernel - 1) * p.channels;
  T xin = static_cast<const T*>(p.x)[int64_t(s) * p.ldx + c];
  float acc = to_f32(w[p.kernel - 1]) * to_f32(xin);
  int tail = p.kernel - 1;
  for (int j = 0; j < tail; ++j) {
    T v = st[int64_t(j) * p.channels + c];
    acc += to_f32(w[j]) * to_f32(v);
    if (j > 0) st[int64_t(j - 1) * p.channels + c] = v;
  }
  if (tail > 0) st[int64_t(tail - 1) * p.channels + c] = xin;
  static_cast<T*>(p.y)[int64_t(s) * p.channels + c] = from_f32<T>(siluf_(acc));
}

}  // namespace ds::gpu
