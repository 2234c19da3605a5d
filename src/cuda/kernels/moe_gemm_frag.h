// FP8 grouped and dense GEMMs of decode-sized token tiles (moe_gemm_frag.cu). Internal to run_moe_gemm
// (moe_gemm.h), which selects it for FP8 weights at tile_tokens 16 when DeviceContext::switches.fp8_frag is
// set (DELTASERVE_CUDA_FP8_FRAG) and the scale blocks are at least 64 columns wide; the staged tile kernel
// stays as the fallback and the A/B comparison.
//
// Why: at 1-16 tokens per expert the FP8 tile kernel spent its time converting e4m3 to bf16 through the cvt
// pipe (about 2 conversions per weight, ~2.1 TB/s of FP8 at best on an H200) between two barriers per k step.
// Here every warp streams its own weight rows and x rows into a private cp.async ring (no barriers), turns
// each 32-bit word of e4m3 into the bf16 pairs of an mma.sync A fragment on the integer pipe, and applies
// the scales to per-k-block partial sums in fp32.
#pragma once
#include "cuda/device_context.h"
#include "cuda/kernels/moe_gemm.h"

namespace ds::gpu {

bool moe_gemm_frag_applies(const MoeGemmParams& p, const DeviceContext& ctx);
void launch_moe_gemm_frag(const MoeGemmParams& p, const DeviceContext& ctx);
void configure_moe_gemm_frag();

}  // namespace ds::gpu
