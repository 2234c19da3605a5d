#include <cuda_fp8.h>

#include "cuda/kernels/common.cuh"
#include "cuda/kernels/fp8.h"
#include "cuda/kernels/fp8_codec.cuh"

namespace ds::gpu {
namespace {

__device__ __forceinline__ uint64_t mix64_fp8(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// One block per scale block: the block's amax, its scale, then the quantized values.
template <typename T>
__global__ void quantize_fp8_kernel(const T* src, Fp8Matrix m) {
  __shared__ float red[32];
  const int64_t bn = int64_t(1) << m.row_shift, bk = int64_t(1) << m.k_shift;
  const int64_t r0 = int64_t(blockIdx.y) * bn, c0 = int64_t(blockIdx.x) * bk;
  const int64_t r1 = min(m.rows, r0 + bn), c1 = min(m.K, c0 + bk), w = c1 - c0, n = (r1 - r0) * w;
  float amax = 0.f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
    amax = fmaxf(amax, fabsf(to_f32(src[(r0 + i / w) * m.K + c0 + i % w])));
  amax = block_max(amax, red);
  const float s = amax > 0.f ? __fdiv_rn(amax, 448.f) : 1.f;
  if (threadIdx.x == 0) m.scale[int64_t(blockIdx.y) * m.ld + blockIdx.x] = s;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const int64_t idx = (r0 + i / w) * m.K + c0 + i % w;
    m.q[idx] = to_e4m3(__fdiv_rn(to_f32(src[idx]), s));
  }
}

__global__ void fill_fp8_kernel(Fp8Matrix m, int64_t scale_count, float amp, uint64_t seed) {
  const float s = amp / 448.f;
  const int64_t n = m.rows * m.K, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float u = float(mix64_fp8(seed * 0x9e3779b97f4a7c15ull + uint64_t(i)) >> 40) * (1.0f / 16777216.0f);
    m.q[i] = to_e4m3((2.f * u - 1.f) * 448.f);
  }
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < scale_count; i += stride) m.scale[i] = s;
}

template <typename T>
__global__ void dequantize_fp8_kernel(Fp8Matrix m, T* out, int64_t ldo) {
  const int64_t n = m.rows * m.K, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const int64_t r = i / m.K, k = i % m.K;
    const float s = m.scale[(r >> m.row_shift) * m.ld + (k >> m.k_shift)];
    out[r * ldo + k] = from_f32<T>(__fmul_rn(from_e4m3(m.q[i]), s));
  }
}

// Half a warp per (row, 128-column block): 8 values a lane, split by x_split8 (the x split's own arithmetic).
template <typename T>
__global__ void quantize_act_fp8_kernel(ActQuantParams p) {
  const int lane = threadIdx.x & 31, kb_count = p.K >> 7;
  const int64_t item = ((int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 4);  // (row, block) of this half warp
  const bool on = item < int64_t(p.rows) * kb_count;  // (off lanes still take part in the shuffles)
  const int r = on ? int(item / kb_count) : 0, kb = on ? int(item % kb_count) : 0, c = kb * 128 + (lane & 15) * 8;
  float v[8], amax = 0.f;
  const T* x = static_cast<const T*>(p.x) + int64_t(r) * p.ldx + c;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    v[j] = on ? to_f32(x[j]) : 0.f;
    amax = fmaxf(amax, fabsf(v[j]));
  }
#pragma unroll
  for (int o = 8; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));  // the half warp's
  uint2 hi, lo;
  const float s = x_split8(v, amax, hi, lo);
  if (!on) return;
  const int64_t at = int64_t(r) * p.K + c;
  *reinterpret_cast<uint2*>(p.hi + at) = hi;
  if (p.lo) *reinterpret_cast<uint2*>(p.lo + at) = lo;
  if ((lane & 15) == 0) p.scale[int64_t(kb) * p.rows + r] = s;
}

unsigned grid_of(int64_t n) { return unsigned(std::min<int64_t>((n + 255) / 256, 65535)); }

}  // namespace

void run_quantize_fp8(const void* src, DType src_t, const Fp8Matrix& m, const DeviceContext& ctx) {
  if (m.rows == 0 || m.K == 0) return;
  DS_GPU_REQUIRE(m.row_shift < 16 && m.k_shift < 16, "run_quantize_fp8: blocks up to 2^15");
  const dim3 grid(ceil_div(m.K, int64_t(1) << m.k_shift), ceil_div(m.rows, int64_t(1) << m.row_shift));
  DS_GPU_REQUIRE(grid.y <= 65535, "run_quantize_fp8: too many block rows");
  dispatch_act(src_t, [&]<typename T>() {
    quantize_fp8_kernel<T><<<grid, 256, 0, ctx.stream>>>(static_cast<const T*>(src), m);
  });
  DS_CUDA_CHECK_LAUNCH();
}

void run_fill_fp8(const Fp8Matrix& m, int64_t scale_count, float amp, uint64_t seed, const DeviceContext& ctx) {
  if (m.rows == 0 || m.K == 0) return;
  fill_fp8_kernel<<<grid_of(std::max(m.rows * m.K, scale_count)), 256, 0, ctx.stream>>>(m, scale_count, amp, seed);
  DS_CUDA_CHECK_LAUNCH();
}

void run_dequantize_fp8(const Fp8Matrix& m, void* out, DType out_t, int64_t ldo, const DeviceContext& ctx) {
  if (m.rows == 0 || m.K == 0) return;
  dispatch_act(out_t, [&]<typename T>() {
    dequantize_fp8_kernel<T><<<grid_of(m.rows * m.K), 256, 0, ctx.stream>>>(m, static_cast<T*>(out), ldo);
  });
  DS_CUDA_CHECK_LAUNCH();
}

void run_quantize_act_fp8(const ActQuantParams& p, DType act, const DeviceContext& ctx) {
  if (p.rows == 0) return;
  DS_GPU_REQUIRE(p.K % 128 == 0 && p.ldx % 4 == 0, "run_quantize_act_fp8: K and ldx must be multiples of 128 and 4");
  const int64_t threads = int64_t(p.rows) * (p.K / 128) * 16;
  dispatch_act(act, [&]<typename T>() {
    quantize_act_fp8_kernel<T><<<unsigned(ceil_div(threads, int64_t(256))), 256, 0, ctx.stream>>>(p);
  });
  DS_CUDA_CHECK_LAUNCH();
}

}  // namespace ds::gpu
