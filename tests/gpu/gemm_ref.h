// CPU references of the GEMV/GEMM op tests (test_ops_gemm.cpp, test_fp8.cpp): the CPU GEMM twin, and
// the expected output of a grouped GEMV whose groups pick weight matrices and gather x rows.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/gemm/op.h"

namespace ds::gpu::test {

// The SiLU-mul of rows of [gate | up] products (gu: [rows, 2N]): silu(gate) * up, [rows, N].
inline std::vector<float> silu_mul_rows(const std::vector<float>& gu, int rows, int N) {
  std::vector<float> out(size_t(rows) * N);
  for (int r = 0; r < rows; ++r)
    for (int n = 0; n < N; ++n) {
      const float g = gu[size_t(r) * 2 * N + n], u = gu[size_t(r) * 2 * N + N + n];
      out[size_t(r) * N + n] = g / (1.f + std::exp(-g)) * u;
    }
  return out;
}

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

// The MoE GEMM's grouped product in double: active expert i owns output rows [start[i], start[i+1]) and
// multiplies matrix expert[i] of dq ([matrices, wrows, K]) by x row xr[r] (x_rows given) or r. silu: wrows =
// 2N ([gate; up]) and the row is silu(x . gate_n) * (x . up_n); else wrows = N and the plain product.
inline std::vector<float> grouped_moe_reference(const std::vector<float>& x, const std::vector<float>& dq, int N,
                                                int K, bool silu, const std::vector<int32_t>& expert,
                                                const std::vector<int32_t>& start, const std::vector<int32_t>* xr) {
  const int wrows = silu ? 2 * N : N;
  std::vector<float> want(size_t(start.back()) * N);
  for (size_t i = 0; i < expert.size(); ++i)
    for (int r = start[i]; r < start[i + 1]; ++r) {
      const float* xv = x.data() + int64_t(xr ? (*xr)[size_t(r)] : r) * K;
      auto dot = [&](int n) {
        double d = 0;
        const float* wv = dq.data() + (int64_t(expert[i]) * wrows + n) * K;
        for (int k = 0; k < K; ++k) d += double(wv[k]) * xv[k];
        return d;
      };
      for (int n = 0; n < N; ++n) {
        const double v = silu ? dot(n) / (1.0 + std::exp(-dot(n))) * dot(N + n) : dot(n);
        want[size_t(r) * N + size_t(n)] = float(v);
      }
    }
  return want;
}

// The grouped launches of the MoE GEMM kernel tests (test_fp8.cpp, test_int4.cpp): active experts 3, 0, 4, 1 of
// 5 matrices (two grid slots more than active), N = 200 (not a multiple of 64), K = 2304; at 16-token tiles
// 1 / 7 / 20 / 9 rows (more than one tile), at 64-token tiles 1 / 70 / 150 / 9; T source rows, and row r of
// the gathered form (gate/up) reads x row (7 r + 3) % T. R: the x rows to allocate.
struct GroupedMoeCase {
  int mats = 5, N = 200, K = 2304, T = 0, rows = 0, R = 0;
  std::vector<int32_t> expert = {3, 0, 4, 1}, start = {0}, xr, num_active;
};
inline GroupedMoeCase grouped_moe_case(int tile) {
  GroupedMoeCase c;
  c.T = tile == 16 ? 24 : 160;
  for (int n : tile == 16 ? std::vector<int>{1, 7, 20, 9} : std::vector<int>{1, 70, 150, 9})
    c.start.push_back(c.start.back() + n);
  c.rows = c.start.back();
  c.R = std::max(c.rows, c.T);
  for (int r = 0; r < c.rows; ++r) c.xr.push_back((r * 7 + 3) % c.T);
  c.num_active = {int32_t(c.expert.size())};
  return c;
}

}  // namespace ds::gpu::test
