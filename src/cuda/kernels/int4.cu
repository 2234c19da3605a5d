#include <algorithm>

#include "cuda/kernels/common.cuh"
#include "cuda/kernels/int4.h"

namespace ds::gpu {
namespace {

// PCG's output permutation of a 64-bit LCG step of (seed, i): 32 well-mixed bits per index.
__device__ __forceinline__ uint32_t pcg_hash(uint64_t seed, uint64_t i) {
  const uint64_t st = (seed + i) * 6364136223846793005ull + 1442695040888963407ull;
  const uint32_t x = uint32_t(((st >> 18) ^ st) >> 27), rot = uint32_t(st >> 59);
  return (x >> rot) | (x << ((32u - rot) & 31u));
}

template <typename T>
__global__ void dequantize_int4_kernel(Int4Matrix m, T* out, int64_t ldo) {
  const int64_t n = m.rows * m.K, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const int64_t r = i / m.K, k = i % m.K, si = r * m.ld + (k >> m.k_shift);
    const int nib = (m.q[r * (m.K / 2) + k / 2] >> (4 * (k & 1))) & 15;
    const float z = m.zero ? m.zero[si] : 8.f;
    out[r * ldo + k] = from_f32<T>(__fmul_rn(float(nib) - z, m.scale[si]));
  }
}

__global__ void fill_int4_kernel(Int4Matrix m, int64_t scale_count, float amp, uint64_t seed) {
  const int64_t n = m.rows * (m.K / 2), stride = int64_t(gridDim.x) * blockDim.x;
  // nibbles 1..15 (values -7..7 around the implicit zero 8): zero-mean, like the bf16 dummy weights. All 16
  // nibbles would give every weight a mean of -amp/15, a common component that grows along the residual
  // stream until every token's hidden state, routing and argmax are the same (a degenerate, fast model).
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const uint32_t h = pcg_hash(seed * 0x9e3779b97f4a7c15ull, uint64_t(i));
    m.q[i] = uint8_t((1 + (h & 0xffff) % 15) | ((1 + (h >> 16) % 15) << 4));
  }
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < scale_count; i += stride) m.scale[i] = amp / 7.5f;
}

unsigned grid_of(int64_t n) { return unsigned(std::min<int64_t>((n + 255) / 256, 65535)); }

}  // namespace

void run_dequantize_int4(const Int4Matrix& m, void* out, DType out_t, int64_t ldo, const DeviceContext& ctx) {
  if (m.rows == 0 || m.K == 0) return;
  DS_GPU_REQUIRE(m.K % 2 == 0 && m.k_shift >= 1 && m.k_shift < 31, "run_dequantize_int4: K even, groups >= 2");
  dispatch_act(out_t, [&]<typename T>() {
    dequantize_int4_kernel<T><<<grid_of(m.rows * m.K), 256, 0, ctx.stream>>>(m, static_cast<T*>(out), ldo);
  });
  DS_CUDA_CHECK_LAUNCH();
}

void run_fill_int4(const Int4Matrix& m, int64_t scale_count, float amp, uint64_t seed, const DeviceContext& ctx) {
  if (m.rows == 0 || m.K == 0) return;
  fill_int4_kernel<<<grid_of(std::max(m.rows * m.K / 2, scale_count)), 256, 0, ctx.stream>>>(m, scale_count, amp, seed);
  DS_CUDA_CHECK_LAUNCH();
}

}  // namespace ds::gpu
