// INT4 W4A16 weight kernels besides the GEMVs (gemv_int4.cu): dequantization of a packed matrix into
// the activation dtype (tests, and the large-batch path's weight tiles: dequantize, then the bf16 GEMM)
// and dummy INT4 weights. Layout (GemvParams' INT4 fields): nibbles [rows, K / 2] bytes, weight k of a
// row in the low nibble of byte k / 2 when k is even; element (r, k) = (nibble - zero) * scale with
// scale = scale[r * ld + (k >> k_shift)] and zero at the same index of `zero` (null: 8, symmetric).
// CPU twin: model/quant_int4.h (dequantize_int4).
#pragma once
#include <cstdint>

#include "core/dtype.h"
#include "cuda/device_context.h"

namespace ds::gpu {

struct Int4Matrix {
  uint8_t* q = nullptr;        // [rows, K / 2]
  float* scale = nullptr;      // [rows, ld]
  float* zero = nullptr;       // [rows, ld] or null
  int64_t rows = 0, K = 0;     // K even
  int64_t ld = 1;
  int k_shift = 7;             // log2(group)
};

// out[r, k] = (nibble - zero) * scale in `out_t` (bf16 or fp32; fp32 products); rows of out are ldo apart.
void run_dequantize_int4(const Int4Matrix& m, void* out, DType out_t, int64_t ldo, const DeviceContext& ctx);
// Dummy weights: uniform random nibbles (values -8..7 around the symmetric offset), every scale
// (scale_count entries) = amp / 7.5, no zero points.
void run_fill_int4(const Int4Matrix& m, int64_t scale_count, float amp, uint64_t seed, const DeviceContext& ctx);

}  // namespace ds::gpu
