// RMSNorm and the KDA output's gated RMSNorm on fp32 host memory (CPU twins).
// RMSNorm: y = x · rsqrt(mean(x²) + eps) · w (plain weight, no "1 + w"). The gated form normalises
// each head vector and multiplies by sigmoid(gate): y = rmsnorm(x) · w · sigmoid(gate) (spec §4.6).
// Sums of squares are accumulated in double.
#pragma once
#include <cstdint>

namespace ds::kernels {

struct RmsNormParams {
  const float* x = nullptr;  // [rows, dim], row stride ldx
  const float* w = nullptr;  // [dim]
  float* y = nullptr;        // [rows, dim], row stride ldy; may alias x
  int64_t rows = 0, dim = 0;
  int64_t ldx = 0, ldy = 0;  // 0: dim
  float eps = 1e-5f;
};
void run_rmsnorm_cpu(const RmsNormParams& p);

struct GatedRmsNormParams {
  const float* x = nullptr;     // [rows, dim] (rows = tokens × heads, one head vector per row)
  const float* gate = nullptr;  // [rows, dim] pre-sigmoid gate
  const float* w = nullptr;     // [dim], shared by all heads
  float* y = nullptr;           // [rows, dim]; may alias x
  int64_t rows = 0, dim = 0;
  float eps = 1e-5f;
};
void run_gated_rmsnorm_cpu(const GatedRmsNormParams& p);

}  // namespace ds::kernels
