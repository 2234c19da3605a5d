// CPU references of the GEMV/GEMM op tests (test_ops_gemm.cpp, test_fp8.cpp): the CPU GEMM twin, and
// the expected output of a grouped GEMV whose groups pick weight matrices and gather x rows.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/gemm/op.h"

namespace ds::gpu::test {

// y[M, N] = x[M, K] (rows ldx apart) . w[N, K]^T
inline std::vector<float> cpu_gemm(const std::vector<float>& x, int64_t ldx, const std::vector<float>& w, int M, int N,
                                   int K) {
  std::vector<float> y(size_t(M) * N);
  kernels::GemmParams g;
  g.x = x.data();
  g.ldx = ldx;
  g.w = w.data();
  g.y = y.data();
  g.M = M;
  g.N = N;
  g.K = K;
  kernels::run_gemm_cpu(g);
  return y;
}

// Group s multiplies x rows rows[slot_start[s] .. slot_start[s+1]) by matrix slot_weight[s] of w
// ([matrices, N, K]); the groups' outputs one after another.
inline std::vector<float> grouped_reference(const std::vector<float>& x, const std::vector<float>& w, int N, int K,
                                            const std::vector<int32_t>& slot_weight,
                                            const std::vector<int32_t>& slot_start, const std::vector<int32_t>& rows) {
  std::vector<float> ref;
  for (size_t s = 0; s < slot_weight.size(); ++s) {
    std::vector<float> xs;
    for (int r = slot_start[s]; r < slot_start[s + 1]; ++r)
      xs.insert(xs.end(), x.begin() + int64_t(rows[size_t(r)]) * K, x.begin() + int64_t(rows[size_t(r)] + 1) * K);
    const int64_t e = slot_weight[s];
    std::vector<float> ws(w.begin() + e * N * K, w.begin() + (e + 1) * N * K);
    auto y = cpu_gemm(xs, K, ws, slot_start[s + 1] - slot_start[s], N, K);
    ref.insert(ref.end(), y.begin(), y.end());
  }
  return ref;
}

}  // namespace ds::gpu::test
