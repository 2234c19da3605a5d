// The Hopper (sm_90a) MLA prefill kernel: wgmma, warp-specialised (mla_prefill_wgmma.cu). Internal to
// run_mla_prefill (mla_prefill.h), which selects it for bf16 on sm_90 when DeviceContext::switches.wgmma
// is set; the mma.sync kernel stays as the fallback and the tests' oracle.
#pragma once
#include "cuda/device_context.h"
#include "cuda/kernels/mla_prefill.h"

namespace ds::gpu {

// Whether the wgmma kernel can run on ctx's device (compute capability 9.x, enough shared memory).
bool mla_prefill_wgmma_supported(const DeviceContext& ctx);
// p with its strides and scale already resolved (run_mla_prefill does that), bf16 tensors.
void launch_mla_prefill_wgmma(const MlaPrefillParams& p, const DeviceContext& ctx);
void configure_mla_prefill_wgmma(const DeviceContext& ctx);

}  // namespace ds::gpu
