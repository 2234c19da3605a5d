// RMSNorm and the KDA output gated RMSNorm on the GPU. Activations are bf16 or fp32 (dtype argument);
// the math is fp32. CPU twins: src/kernels/rmsnorm, src/kernels/gated_rmsnorm (run_*_cpu).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"
#include "cuda/device_context.h"

namespace ds::gpu {

// y[r] = x[src(r)] * rsqrt(mean(x[src(r)]^2) + eps) * weight, with src(r) = row_index ? row_index[r] : r.
struct RmsNormParams {
  const void* x = nullptr;            // [*, ldx] act dtype
  int64_t ldx = 0;                    // elements between rows of x
  const int32_t* row_index = nullptr; // [rows] device; may be null (identity)
  const void* weight = nullptr;       // [dim] act dtype
  void* y = nullptr;                  // [rows, ldy] act dtype (may alias x when row_index is null and ldy == ldx)
  int64_t ldy = 0;
  int rows = 0, dim = 0;              // dim a multiple of 8
  float eps = 1e-5f;
  // Also y's x split for the FP8 tensor cores (XSplitParams' layout, moe_gemm_fp8_wgmma.h: hi and lo planes of
  // rows x dim e4m3, then rows x dim / 128 fp32 scales; x_split_bytes(rows, dim) bytes), computed from y as
  // stored, byte for byte what run_x_split of y writes; bf16 only, rmsnorm_split_fits(dim). Null: none.
  void* split = nullptr;
};
bool rmsnorm_split_fits(int dim);
void run_rmsnorm(const RmsNormParams& p, DType act, const DeviceContext& ctx);

// KDA output norm (spec 4.6), per token t and head h over head_dim values:
//   y[t, h, :] = o[t, h, :] * rsqrt(mean(o[t,h,:]^2) + eps) * weight * sigmoid(gate[t, h, :])
struct GatedRmsNormParams {
  const void* o = nullptr;       // [tokens, heads * head_dim] act dtype (row stride heads*head_dim)
  const void* gate = nullptr;    // [tokens, ldg] act dtype; head h at columns [h*head_dim, (h+1)*head_dim)
  int64_t ldg = 0;
  const void* weight = nullptr;  // [head_dim] act dtype, shared by all heads
  void* y = nullptr;             // [tokens, heads * head_dim] act dtype
  int tokens = 0, heads = 0, head_dim = 0;
  float eps = 1e-5f;
};
void run_gated_rmsnorm(const GatedRmsNormParams& p, DType act, const DeviceContext& ctx);

}  // namespace ds::gpu
