// SwiGLU activation on fp32 host memory (CPU twin): y = silu(gate) ⊙ up.
#pragma once
#include <cstdint>

namespace ds::kernels {

struct SiluMulParams {
  const float* gate = nullptr;  // [rows, dim], row stride ld_gate
  const float* up = nullptr;    // [rows, dim], row stride ld_up
  float* y = nullptr;           // [rows, dim], row stride ld_y; may alias gate or up
  int64_t rows = 0, dim = 0;
  int64_t ld_gate = 0, ld_up = 0, ld_y = 0;  // 0: dim
};
void run_silu_mul_cpu(const SiluMulParams& p);

}  // namespace ds::kernels
