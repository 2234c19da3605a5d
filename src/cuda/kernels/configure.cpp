#include "cuda/kernels/configure.h"

#include "cuda/cuda_check.h"
#include "cuda/kernels/gemv.h"
#include "cuda/kernels/kda_prefill.h"
#include "cuda/kernels/mla_decode.h"
#include "cuda/kernels/mla_prefill.h"
#include "cuda/kernels/moe_gemm.h"

namespace ds::gpu {

void configure_kernels(const DeviceContext& ctx) {
  int prev = 0;
  DS_CUDA_CHECK(cudaGetDevice(&prev));
  if (prev != ctx.device()) DS_CUDA_CHECK(cudaSetDevice(ctx.device()));
  configure_gemv(ctx);
  configure_moe_gemm(ctx);
  configure_kda_prefill(ctx);
  configure_mla_prefill(ctx);
  configure_mla_decode(ctx);
  if (prev != ctx.device()) DS_CUDA_CHECK(cudaSetDevice(prev));
}

}  // namespace ds::gpu
