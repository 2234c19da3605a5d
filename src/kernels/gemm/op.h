// Dense projection y = x·Wᵀ on fp32 host memory: the CPU twin of every Linear layer.
// W has PyTorch's Linear layout [out, in] (row-major, the reduction dimension contiguous), so each
// output element is a dot product of two contiguous rows. Every y[m, n] is summed in the same order
// whatever M, N or the tiling, so a row's result does not depend on which other rows share the call
// (batched == alone, bit for bit).
#pragma once
#include <cstdint>

namespace ds::kernels {

struct GemmParams {
  const float* x = nullptr;  // [M, K], row stride ldx
  const float* w = nullptr;  // [N, K], row stride ldw
  float* y = nullptr;        // [M, N], row stride ldy; must not alias x or w
  int64_t M = 0, N = 0, K = 0;
  int64_t ldx = 0;           // 0: K
  int64_t ldw = 0;           // 0: K
  int64_t ldy = 0;           // 0: N
  bool accumulate = false;   // y += x·Wᵀ instead of y = x·Wᵀ
};

// Multithreaded over row and column blocks (ds::parallel_for); fp32 accumulation.
void run_gemm_cpu(const GemmParams& p);

}  // namespace ds::kernels
