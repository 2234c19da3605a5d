// Norms, SiLU·mul, embedding and the short convolution against straightforward references.
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "kernel_test_util.h"
#include "kernels/activation/op.h"
#include "kernels/conv1d/op.h"
#include "kernels/embedding/op.h"
#include "kernels/norm/op.h"

namespace ds::test {
namespace {

TEST(Norm, RmsNormAndGated) {
  const int64_t rows = 7, dim = 128;
  const auto x = randn(size_t(rows * dim), 1, 3.0f), w = randn(size_t(dim), 2), g = randn(size_t(rows * dim), 3);
  std::vector<float> y(x.size()), yg(x.size());
  kernels::run_rmsnorm_cpu({.x = x.data(), .w = w.data(), .y = y.data(), .rows = rows, .dim = dim, .eps = 1e-6f});
  kernels::run_gated_rmsnorm_cpu({.x = x.data(), .gate = g.data(), .w = w.data(), .y = yg.data(), .rows = rows,
                                  .dim = dim, .eps = 1e-5f});
  std::vector<double> ref(x.size()), refg(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < dim; ++i) ss += double(x[r * dim + i]) * x[r * dim + i];
    for (int64_t i = 0; i < dim; ++i) {
      ref[r * dim + i] = x[r * dim + i] / std::sqrt(ss / dim + 1e-6) * w[i];
      refg[r * dim + i] = x[r * dim + i] / std::sqrt(ss / dim + 1e-5) * w[i] / (1.0 + std::exp(-double(g[r * dim + i])));
    }
  }
  EXPECT_LT(rel_l2(y, ref), 1e-6);
  EXPECT_LT(rel_l2(yg, refg), 1e-6);
}

TEST(Activation, SiluMul) {
  const auto g = randn(64, 4, 4.0f), u = randn(64, 5);
  std::vector<float> y(64);
  kernels::run_silu_mul_cpu({.gate = g.data(), .up = u.data(), .y = y.data(), .rows = 4, .dim = 16});
  for (int i = 0; i < 64; ++i) EXPECT_NEAR(y[i], g[i] / (1.0 + std::exp(-double(g[i]))) * u[i], 1e-6);
}

TEST(Embedding, GathersRowsAndRejectsBadIds) {
  const auto table = randn(10 * 4, 6);
  const std::vector<int32_t> ids = {3, 0, 9, 3};
  std::vector<float> y(16);
  kernels::run_embedding_cpu({.ids = ids.data(), .table = table.data(), .y = y.data(), .T = 4, .vocab = 10, .dim = 4});
  for (int t = 0; t < 4; ++t)
    for (int d = 0; d < 4; ++d) EXPECT_EQ(y[t * 4 + d], table[ids[t] * 4 + d]);
  const int32_t bad = 10;
  EXPECT_THROW(kernels::run_embedding_cpu({.ids = &bad, .table = table.data(), .y = y.data(), .T = 1, .vocab = 10,
                                           .dim = 4}),
               Error);
}

// Whole sequences vs the same sequences fed in pieces (1, 2, then the rest) through their tails.
TEST(Conv1d, MatchesReferenceAndCarriesTails) {
  const int64_t C = 70, W = 4, T = 23;
  const auto x = randn(size_t(T * C), 7), w = randn(size_t(C * W), 8, 0.5f);
  std::vector<double> ref(size_t(T * C));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < C; ++c) {
      double acc = 0;
      for (int64_t j = 0; j < W; ++j) {
        const int64_t tau = t - (W - 1) + j;
        if (tau >= 0) acc += double(w[c * W + j]) * x[tau * C + c];
      }
      ref[t * C + c] = acc / (1.0 + std::exp(-acc));
    }
  // Whole sequence in slot 1 of a 2-slot pool.
  std::vector<float> tails(size_t(2 * (W - 1) * C), 0.0f), y(size_t(T * C));
  const int32_t cu[2] = {0, int32_t(T)}, slot = 1;
  kernels::run_causal_conv1d_cpu({.x = x.data(), .w = w.data(), .y = y.data(), .tails = tails.data(),
                                  .cu_seqlens = cu, .slots = &slot, .num_seqs = 1, .C = C, .W = W});
  EXPECT_LT(rel_l2(y, ref), 1e-6);
  for (int64_t r = 0; r < W - 1; ++r)
    for (int64_t c = 0; c < C; ++c) EXPECT_EQ(tails[((W - 1) + r) * C + c], x[(T - (W - 1) + r) * C + c]);
  // Pieces of 1, 2 and 20 tokens through slot 0.
  std::vector<float> tails2(tails.size(), 0.0f), y2(size_t(T * C));
  int32_t start = 0;
  for (int32_t n : {1, 2, 20}) {
    const int32_t cu2[2] = {0, n}, s0 = 0;
    kernels::run_causal_conv1d_cpu({.x = x.data() + start * C, .w = w.data(), .y = y2.data() + start * C,
                                    .tails = tails2.data(), .cu_seqlens = cu2, .slots = &s0, .num_seqs = 1,
                                    .C = C, .W = W});
    start += n;
  }
  EXPECT_EQ(y2, y);
}

}  // namespace
}  // namespace ds::test
