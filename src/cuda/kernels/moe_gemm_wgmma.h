// The Hopper (sm_90a) grouped expert GEMM: wgmma, warp-specialised (moe_gemm_wgmma.cu). Internal to
// run_moe_gemm (moe_gemm.h), which selects it for prefill-sized launches (tile_tokens 64) on sm_90 when
// DeviceContext::switches.wgmma is set; the mma.sync kernel stays as the fallback and the tests' oracle.
#pragma once
#include "cuda/device_context.h"
#include "cuda/kernels/moe_gemm.h"

namespace ds::gpu {

// Whether the wgmma kernel can run p on ctx's device (compute capability 9.x, K a multiple of 64, N of 8).
bool moe_gemm_wgmma_supported(const MoeGemmParams& p, const DeviceContext& ctx);
void launch_moe_gemm_wgmma(const MoeGemmParams& p, const DeviceContext& ctx);
void configure_moe_gemm_wgmma(const DeviceContext& ctx);

}  // namespace ds::gpu
