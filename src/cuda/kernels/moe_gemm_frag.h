// FP8 grouped and dense GEMMs of decode-sized token tiles (moe_gemm_frag.cu). Internal to run_moe_gemm
// (moe_gemm.h), which selects it for FP8 weights at tile_tokens 16 when DeviceContext::switches.fp8_frag is
// set (DELTASERVE_CUDA_FP8_FRAG) and the scale blocks are at least 64 columns wide; the staged tile kernel
// stays as the fallback and the A/B comparison.
//
// Why: ncu shows the staged tile kernel bound by the L1/shared-memory pipe at 1-16 tokens per expert (44% of
// DRAM bandwidth): it passes every weight through shared memory three times (raw bytes in, a bf16 tile out,
// ldmatrix back). Here the raw bytes are staged once and each thread reads its mma.sync A fragments from
// them with 16-byte shared loads, converting e4m3 to bf16 on the integer pipe; the scales apply to per-k-block
// partial sums in fp32. (Session 8's first form, per-warp cp.async rings with x and scales copied per thread,
// measured slower than the staged kernel: L1-bound at 12.5% occupancy; this block-staged form is unmeasured.)
#pragma once
#include "cuda/device_context.h"
#include "cuda/kernels/moe_gemm.h"

namespace ds::gpu {

bool moe_gemm_frag_applies(const MoeGemmParams& p, const DeviceContext& ctx);
void launch_moe_gemm_frag(const MoeGemmParams& p, const DeviceContext& ctx);
void configure_moe_gemm_frag();

}  // namespace ds::gpu
