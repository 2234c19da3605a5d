#include "cuda/kernels/collective.h"

#include <algorithm>

#include "cuda/cuda_check.h"
#include "cuda/kernels/common.cuh"

namespace ds::gpu {
namespace {

template <typename T>
__global__ void rank_sum_kernel(RankSumParams p) {
  for (int64_t i = p.begin + int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < p.end;
       i += int64_t(gridDim.x) * blockDim.x) {
    float s = 0.f;
    for (int r = 0; r < p.ranks; ++r) s += to_f32(static_cast<const T*>(p.data[r])[i]);
    const T v = from_f32<T>(s);
    for (int r = 0; r < p.ranks; ++r) static_cast<T*>(p.data[r])[i] = v;
  }
}

}  // namespace

void run_rank_sum(const RankSumParams& p, const DeviceContext& ctx) {
  if (p.end <= p.begin) return;
  DS_GPU_REQUIRE(p.ranks >= 1 && p.ranks <= kMaxCollectiveRanks, "run_rank_sum: 1..8 ranks");
  DS_GPU_REQUIRE(p.dtype == DType::F32 || p.dtype == DType::BF16, "run_rank_sum: fp32 or bf16 only");
  for (int r = 0; r < p.ranks; ++r) DS_GPU_REQUIRE(p.data[r] != nullptr, "run_rank_sum: null buffer");
  const int64_t n = p.end - p.begin;
  const unsigned grid = unsigned(std::min<int64_t>((n + 255) / 256, int64_t(ctx.num_sms()) * 8));
  dispatch_act(p.dtype, [&]<typename T>() { rank_sum_kernel<T><<<grid, 256, 0, ctx.stream>>>(p); });
  DS_CUDA_CHECK_LAUNCH();
}

}  // namespace ds::gpu
