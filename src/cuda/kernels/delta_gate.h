// The KDA forget gate (softplus form, spec 4.2) and write strength beta (spec 4.3), fused:
//   g[t, h*D + d] = -exp(A_log[h]) * softplus(f[t, h*D + d] + dt_bias[h*D + d])   (threshold 20)
//   beta[t, h]    = sigmoid(b[t, h])
// fp32 outputs, consumed by the KDA kernels. CPU twin: src/kernels/kda_gate (run_kda_gate_cpu).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"
#include "cuda/device_context.h"
#include "cuda/kernels/conv1d.h"

namespace ds::gpu {

struct KdaGateParams {
  const void* f = nullptr;         // [tokens, ldf] act dtype: f_b_proj(f_a_proj(x)), heads*head_dim columns
  int64_t ldf = 0;
  const void* b = nullptr;         // [tokens, ldb] act dtype: b_proj(x), heads columns
  int64_t ldb = 0;
  const float* A_log = nullptr;    // [heads]
  const float* dt_bias = nullptr;  // [heads * head_dim]
  float* g = nullptr;              // [tokens, heads * head_dim] fp32
  float* beta = nullptr;           // [tokens, heads] fp32
  int tokens = 0, heads = 0, head_dim = 0;
};
void run_kda_gate(const KdaGateParams& p, DType act, const DeviceContext& ctx);

// Decode step: the gate and the single-token short convolution (conv1d.h) in one launch.
void run_kda_gate_and_conv_decode(const KdaGateParams& g, const Conv1dParams& c, DType act, const DeviceContext& ctx);

}  // namespace ds::gpu
