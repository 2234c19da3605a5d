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

}  // namespace ds::gpu
