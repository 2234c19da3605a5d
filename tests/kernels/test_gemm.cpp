// GEMM y = x·Wᵀ: against a double-precision reference on awkward sizes, strides and accumulation, and
// row results independent of the batch (the property batched == alone rests on).
#include <gtest/gtest.h>

#include "kernel_test_util.h"
#include "kernels/gemm/op.h"

namespace ds::test {
namespace {

std::vector<double> naive(const std::vector<float>& x, const std::vector<float>& w, int64_t M, int64_t N,
                          int64_t K) {
  std::vector<double> y(size_t(M * N));
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double s = 0;
      for (int64_t k = 0; k < K; ++k) s += double(x[m * K + k]) * w[n * K + k];
      y[size_t(m * N + n)] = s;
    }
  return y;
}

TEST(Gemm, MatchesDoubleReference) {
  for (auto [M, N, K] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1}, {1, 2048, 256}, {3, 5, 7},
                         {37, 129, 300}, {65, 67, 9}, {128, 64, 1000}}) {
    const auto x = randn(size_t(M * K), 1), w = randn(size_t(N * K), 2);
    std::vector<float> y(size_t(M * N), -1.0f);
    kernels::run_gemm_cpu({.x = x.data(), .w = w.data(), .y = y.data(), .M = M, .N = N, .K = K});
    // fp32 accumulation of K terms of unit-variance products.
    EXPECT_LT(rel_l2(y, naive(x, w, M, N, K)), 1e-6) << M << "x" << N << "x" << K;
  }
}

TEST(Gemm, StridesAndAccumulate) {
  const int64_t M = 9, N = 13, K = 21, ldx = 30, ldw = 25, ldy = 20;
  const auto xs = randn(size_t(M * ldx), 3), ws = randn(size_t(N * ldw), 4);
  std::vector<float> x(size_t(M * K)), w(size_t(N * K));
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K; ++k) x[m * K + k] = xs[m * ldx + k];
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) w[n * K + k] = ws[n * ldw + k];
  const auto ref = naive(x, w, M, N, K);
  std::vector<float> y(size_t(M * ldy), 1.0f);
  kernels::run_gemm_cpu({.x = xs.data(), .w = ws.data(), .y = y.data(), .M = M, .N = N, .K = K, .ldx = ldx,
                         .ldw = ldw, .ldy = ldy, .accumulate = true});
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = 0; n < N; ++n) EXPECT_NEAR(y[m * ldy + n], 1.0 + ref[m * N + n], 1e-4);
    for (int64_t n = N; n < ldy; ++n) EXPECT_EQ(y[m * ldy + n], 1.0f);  // padding untouched
  }
}

TEST(Gemm, RowsDoNotDependOnTheBatch) {
  const int64_t N = 300, K = 517;
  const auto x = randn(size_t(70 * K), 5), w = randn(size_t(N * K), 6);
  std::vector<float> all(size_t(70 * N));
  kernels::run_gemm_cpu({.x = x.data(), .w = w.data(), .y = all.data(), .M = 70, .N = N, .K = K});
  for (int64_t m : {0, 3, 33, 69}) {
    std::vector<float> one(static_cast<size_t>(N));
    kernels::run_gemm_cpu({.x = x.data() + m * K, .w = w.data(), .y = one.data(), .M = 1, .N = N, .K = K});
    for (int64_t n = 0; n < N; ++n) ASSERT_EQ(one[n], all[m * N + n]) << m << "," << n;
  }
}

}  // namespace
}  // namespace ds::test
