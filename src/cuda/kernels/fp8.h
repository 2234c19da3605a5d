// FP8 (e4m3fn) weight kernels: the block quantizer of `--quantization fp8` (the same arithmetic as
// model/quant.h's quantize_fp8_blocks, so the CPU backend computes from identical weights), dummy FP8
// weights, and dequantization (to the activation dtype: tests and the large-batch GEMM's weight tiles).
// Scale layout of a quantized matrix [rows, K]: element (r, k) is multiplied by
// scale[(r >> row_shift) * ld + (k >> k_shift)] (per channel: row_shift 0, k_shift 31, ld 1).
// CPU twin: model/quant.h.
#pragma once
#include <cstdint>

#include "core/dtype.h"
#include "cuda/device_context.h"

namespace ds::gpu {

struct Fp8Matrix {
  uint8_t* q = nullptr;     // [rows, K]
  float* scale = nullptr;   // see above
  int64_t rows = 0, K = 0;
  int64_t ld = 1;
  int row_shift = 0, k_shift = 31;
};

// Quantizes src [m.rows, m.K] (bf16 or fp32) per block of 2^row_shift x 2^k_shift: scale = amax / 448
// (1 for an all-zero block), q = e4m3(w / scale), round to nearest even, saturating.
void run_quantize_fp8(const void* src, DType src_t, const Fp8Matrix& m, const DeviceContext& ctx);
// Dummy weights: q = e4m3(u / s) for u uniform in [-amp, amp], every scale entry (scale_count) = s = amp / 448.
void run_fill_fp8(const Fp8Matrix& m, int64_t scale_count, float amp, uint64_t seed, const DeviceContext& ctx);
// out[r, k] = e4m3(q[r, k]) * scale(r, k) in `out_t` (bf16 or fp32); rows of out are ldo apart.
void run_dequantize_fp8(const Fp8Matrix& m, void* out, DType out_t, int64_t ldo, const DeviceContext& ctx);

// Activations for cuBLASLt's block-scaled FP8 GEMM (gemm.h, GemmArgs::x_scale): x [rows, K] (act dtype, rows ldx
// apart, K a multiple of 128) per row and 128 columns, with the x split's arithmetic (fp8_codec.cuh, x_split8): s
// the least power of two with amax / s <= 448 (1 for zero), hi[r, k] = e4m3(x / s) and, with lo, lo[r, k] =
// e4m3(x / s - hi); both [rows, K] bytes; scale[(k / 128) * rows + r] = s (cuBLASLt's VEC128 layout: the rows of
// one 128-column block contiguous).
struct ActQuantParams {
  const void* x = nullptr;
  int64_t ldx = 0;
  int rows = 0, K = 0;
  uint8_t* hi = nullptr;
  uint8_t* lo = nullptr;  // optional
  float* scale = nullptr;
};
void run_quantize_act_fp8(const ActQuantParams& p, DType act, const DeviceContext& ctx);

}  // namespace ds::gpu
