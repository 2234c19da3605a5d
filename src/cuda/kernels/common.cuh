// Device helpers shared by the backend's kernels: element conversions for the two activation types
// (bf16 and fp32), 16-byte vector loads, warp/block reductions, dtype dispatch.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include <string>

#include "core/dtype.h"
#include "cuda/cuda_check.h"
#include "cuda/device_context.h"

namespace ds::gpu {

using bf16 = __nv_bfloat16;

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(bf16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ bf16 from_f32<bf16>(float x) { return __float2bfloat16_rn(x); }

// N consecutive elements of T as one aligned vector load (16 bytes: 8 bf16 or 4 floats).
template <typename T> struct Vec16 {
  static constexpr int N = 16 / sizeof(T);
  uint4 raw;
  __device__ __forceinline__ void load(const T* p) { raw = *reinterpret_cast<const uint4*>(p); }
  __device__ __forceinline__ void store(T* p) const { *reinterpret_cast<uint4*>(p) = raw; }
  __device__ __forceinline__ void to_float(float* out) const {
    if constexpr (sizeof(T) == 4) {
      const float* f = reinterpret_cast<const float*>(&raw);
#pragma unroll
      for (int i = 0; i < N; ++i) out[i] = f[i];
    } else {
      const uint32_t* w = reinterpret_cast<const uint32_t*>(&raw);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        out[2 * i] = __uint_as_float(w[i] << 16);
        out[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
      }
    }
  }
  __device__ __forceinline__ void from_float(const float* in) {
    if constexpr (sizeof(T) == 4) {
      float* f = reinterpret_cast<float*>(&raw);
#pragma unroll
      for (int i = 0; i < N; ++i) f[i] = in[i];
    } else {
      bf16* b = reinterpret_cast<bf16*>(&raw);
#pragma unroll
      for (int i = 0; i < N; ++i) b[i] = __float2bfloat16_rn(in[i]);
    }
  }
};

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, <= 1024). `scratch` holds 32 floats. All threads get it.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float t = lane < nw ? scratch[lane] : 0.f;
  return warp_sum(t);
}
__device__ __forceinline__ float block_max(float v, float* scratch) {
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float t = lane < nw ? scratch[lane] : -INFINITY;
  return warp_max(t);
}

// Exclusive prefix sum over the block (blockDim.x <= 1024); `tmp` holds 32 ints. Returns the total too.
__device__ inline int block_exclusive_scan(int v, int* tmp, int* total) {
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  int x = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    int y = __shfl_up_sync(0xffffffffu, x, o);
    if (lane >= o) x += y;
  }
  __syncthreads();
  if (lane == 31) tmp[warp] = x;
  __syncthreads();
  if (warp == 0) {
    int w = lane < nw ? tmp[lane] : 0;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      int y = __shfl_up_sync(0xffffffffu, w, o);
      if (lane >= o) w += y;
    }
    tmp[lane] = w;  // inclusive sums of warp totals
  }
  __syncthreads();
  *total = tmp[nw - 1];
  return x - v + (warp > 0 ? tmp[warp - 1] : 0);
}

__device__ __forceinline__ float sigmoidf_(float x) { return 1.f / (1.f + __expf(-x)); }
__device__ __forceinline__ float siluf_(float x) { return x / (1.f + __expf(-x)); }

inline unsigned ceil_div(int64_t a, int64_t b) { return unsigned((a + b - 1) / b); }

// Programmatic dependent launch (PDL). A kernel started with launch_pdl() may begin while the
// previous kernel of the stream is still running: it calls pdl_trigger() first (letting the next
// kernel start early in turn), may only read immutable data (weights) or prefetch before pdl_wait(),
// and must call pdl_wait() before reading anything a previous kernel wrote or writing anything.
// pdl_wait() returns once the previous kernel has completed and its writes are visible; kernels
// launched the ordinary way are unaffected. DELTASERVE_CUDA_PDL=0 launches everything ordinarily.
__device__ __forceinline__ void pdl_trigger() { asm volatile("griddepcontrol.launch_dependents;" ::: "memory"); }
__device__ __forceinline__ void pdl_wait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }

template <typename... KArgs, typename... Args>
void launch_pdl(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, const DeviceContext& ctx,
                Args&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = ctx.stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = ctx.pdl() ? 1 : 0;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  DS_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...));
}

// Calls f.template operator()<T>() with T = float or bf16 for the activation dtype.
template <typename F> void dispatch_act(DType t, F&& f) {
  if (t == DType::BF16) f.template operator()<bf16>();
  else if (t == DType::F32) f.template operator()<float>();
  else throw_error("CUDA backend: unsupported activation dtype " + std::string(dtype_name(t)));
}

}  // namespace ds::gpu
