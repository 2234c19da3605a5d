// FP8 (and INT4) grouped and dense GEMMs on Hopper's FP8 tensor cores (moe_gemm_fp8_wgmma.cu). Internal to
// run_moe_gemm (moe_gemm.h): it runs this kernel for FP8 or INT4 weights at tile_tokens 16 on sm_90 (and at
// 64 for grouped launches whose scale groups are 128 columns or wider: prefill-sized steps) when the launch
// carries an x-split scratch (MoeGemmParams::x_split) and DeviceContext::switches.fp8_xsplit is on.
//
// Why: the mma.sync kernels convert every FP8 weight to bf16 before the MMA (mma.sync with e4m3 operands is
// not native on Hopper: the compiler converts to f16), and the conversions and shared-memory passes bound
// them at ~50% of the byte floor (docs/PERF.md, sessions 8-9). wgmma takes e4m3 from shared memory as it is,
// but both operands must be e4m3, so x is split first: x = (hi + lo) * s with hi, lo e4m3 and s a power of two
// per row and 128-column k block. hi + lo carries all 8 significant bits of a bf16 value whenever lo is a
// normal e4m3 (|x| >= amax / 224 of its block); below, (hi + lo) * s is within s * 2^-10 of x. Two FP8
// MMAs (hi, lo) per weight tile then compute the bf16 product to within the accumulation's rounding, at the
// FP8 tensor cores' rate and with no conversion of the weights.
#pragma once
#include <cstddef>
#include <cstdint>

#include "cuda/device_context.h"
#include "cuda/kernels/moe_gemm.h"

namespace ds::gpu {

// Columns of x per split scale (and the kernel's k block).
constexpr int kXSplitBlock = 128;

// The split of x rows 0..rows-1 (bf16, K a multiple of 128, ldx of 8) into `out`: hi [rows, K] e4m3, lo the
// same, then the scales [rows, K / 128] fp32 (the least power of two s with amax / s <= 448; 1 for a zero
// block); hi = e4m3(x / s), lo = e4m3(x / s - hi), both rounded to nearest even; then, from a 16-byte boundary
// (x_split_sums_offset), the sums [rows, K / 32] fp32 of hi + lo over each 32 columns (in units of the block's
// scale): the INT4 subnormal form's zero-point term (moe_gemm_fp8_wgmma.cu), which would otherwise take a
// tensor-core product of ones per partial sum.
struct XSplitParams {
  const void* x = nullptr;
  int64_t ldx = 0;
  int rows = 0, K = 0;
  void* out = nullptr;
};
constexpr int64_t x_split_sums_offset(int64_t rows, int64_t K) {
  return (2 * rows * K + rows * (K / kXSplitBlock) * 4 + 15) / 16 * 16;
}
size_t x_split_bytes(int64_t rows, int64_t K);
void run_x_split(const XSplitParams& p, const DeviceContext& ctx);

bool moe_gemm_fp8_wgmma_applies(const MoeGemmParams& p, const DeviceContext& ctx);
// Splits p.x into p.x_split (p.x_split_rows rows) unless p.x_split_ready, then the GEMM.
void launch_moe_gemm_fp8_wgmma(const MoeGemmParams& p, const DeviceContext& ctx);
void configure_moe_gemm_fp8_wgmma(const DeviceContext& ctx);

}  // namespace ds::gpu
