#include "cuda/kernels/nonfinite.h"

#include <algorithm>

#include "cuda/cuda_check.h"
#include "cuda/kernels/common.cuh"

namespace ds::gpu {
namespace {

// One 16-byte vector per thread and step; a block ORs its verdict and one thread writes the flag.
template <bool kF32>
__global__ void flag_nonfinite_kernel(NonfiniteParams p) {
  const uint4* src =
      reinterpret_cast<const uint4*>(static_cast<const char*>(p.base) + int64_t(blockIdx.y) * p.layer_stride);
  const int64_t vecs = p.unit_bytes / 16;
  int bad = 0;
  for (int64_t v = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; v < vecs; v += int64_t(gridDim.x) * blockDim.x) {
    const uint4 x = src[v];
    const uint32_t w[4] = {x.x, x.y, x.z, x.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      if constexpr (kF32) {
        bad |= (w[i] & 0x7f800000u) == 0x7f800000u;
      } else {
        bad |= (w[i] & 0x7f80u) == 0x7f80u;
        bad |= (w[i] & 0x7f800000u) == 0x7f800000u;
      }
    }
  }
  if (__syncthreads_or(bad) && threadIdx.x == 0) *p.flag = 1;
}

}  // namespace

void run_flag_nonfinite(const NonfiniteParams& p, const DeviceContext& ctx) {
  if (p.layers == 0 || p.unit_bytes == 0) return;
  DS_GPU_REQUIRE(p.unit_bytes % 16 == 0 && p.layer_stride % 16 == 0, "run_flag_nonfinite: sizes must be multiples of 16 bytes");
  DS_GPU_REQUIRE(p.dtype == DType::F32 || p.dtype == DType::BF16, "run_flag_nonfinite: fp32 or bf16 only");
  const int64_t vecs = p.unit_bytes / 16;
  const dim3 grid(unsigned(std::min<int64_t>((vecs + 255) / 256, 128)), unsigned(p.layers));
  if (p.dtype == DType::F32) {
    flag_nonfinite_kernel<true><<<grid, 256, 0, ctx.stream>>>(p);
  } else {
    flag_nonfinite_kernel<false><<<grid, 256, 0, ctx.stream>>>(p);
  }
  DS_CUDA_CHECK_LAUNCH();
}

}  // namespace ds::gpu
