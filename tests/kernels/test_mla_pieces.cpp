// MLA prefill over context pieces: each piece's partial attention (output + log-sum-exp) merged with
// run_mla_merge_cpu equals attention over the whole context, for any piece size; the merge op's contract
// (empty pieces, aliasing, commutativity, far-apart log-sum-exps) on its own.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "kernel_test_util.h"
#include "kernels/mla/op.h"

namespace ds::test {
namespace {

constexpr int64_t H = 3, Dq = 24, Dv = 12;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

struct Attn {
  int64_t Tk, Tq;  // keys at positions 0..Tk-1; queries at the last Tq positions
  std::vector<float> q, k, v;
};

Attn make(int64_t Tk, int64_t Tq, uint64_t seed) {
  return {Tk, Tq, randn(size_t(Tq * H * Dq), seed), randn(size_t(Tk * H * Dq), seed + 1),
          randn(size_t(Tk * H * Dv), seed + 2)};
}

const float kScale = float(1.0 / std::sqrt(double(Dq)));

// Keys [k0, k0 + kp) as one piece: output and lse of every query.
void piece(const Attn& a, int64_t k0, int64_t kp, float* o, float* lse) {
  kernels::run_mla_prefill_cpu({.q = a.q.data(), .k = a.k.data() + k0 * H * Dq, .v = a.v.data() + k0 * H * Dv,
                                .o = o, .lse = lse, .Tq = a.Tq, .Tk = kp, .H = H, .Dqk = Dq, .Dv = Dv,
                                .q_pos0 = a.Tk - a.Tq, .k_pos0 = k0, .scale = kScale});
}

// The whole context in pieces of P keys, merged into a running (o, lse).
std::pair<std::vector<float>, std::vector<float>> pieced(const Attn& a, int64_t P) {
  std::vector<float> o(size_t(a.Tq * H * Dv)), lse(size_t(a.Tq * H)), po(o.size()), plse(lse.size());
  piece(a, 0, std::min(P, a.Tk), o.data(), lse.data());
  for (int64_t k0 = P; k0 < a.Tk; k0 += P) {
    piece(a, k0, std::min(P, a.Tk - k0), po.data(), plse.data());
    kernels::run_mla_merge_cpu({.o_a = o.data(), .lse_a = lse.data(), .o_b = po.data(), .lse_b = plse.data(),
                                .o = o.data(), .lse = lse.data(), .T = a.Tq, .H = H, .Dv = Dv});
  }
  return {o, lse};
}

// Double-precision log-sum-exp of every query's causal scores.
std::vector<double> naive_lse(const Attn& a) {
  std::vector<double> out;
  for (int64_t t = 0; t < a.Tq; ++t)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t pos = a.Tk - a.Tq + t;
      double mx = -INFINITY, sum = 0;
      std::vector<double> s;
      for (int64_t j = 0; j <= pos; ++j) {
        double acc = 0;
        for (int64_t i = 0; i < Dq; ++i) acc += double(a.q[(t * H + h) * Dq + i]) * a.k[(j * H + h) * Dq + i];
        s.push_back(acc * kScale);
        mx = std::max(mx, s.back());
      }
      for (double x : s) sum += std::exp(x - mx);
      out.push_back(mx + std::log(sum));
    }
  return out;
}

TEST(MlaPieces, AnyPieceSizeEqualsWholeContext) {
  // A later chunk (queries 40..59 of 60 keys) and a first chunk (queries = keys).
  for (const auto& [Tk, Tq] : {std::pair<int64_t, int64_t>{60, 20}, {33, 33}}) {
    const Attn a = make(Tk, Tq, uint64_t(Tk));
    const auto [whole, whole_lse] = pieced(a, Tk);
    const auto ref_lse = naive_lse(a);
    EXPECT_LT(rel_l2(whole_lse, ref_lse), 1e-6);
    for (int64_t P : {int64_t(1), int64_t(2), int64_t(3), int64_t(7), int64_t(16), Tq - 1, Tk - 1, Tk + 5}) {
      const auto [o, lse] = pieced(a, P);
      EXPECT_LT(rel_l2(o, whole), 1e-6) << "Tk " << Tk << " piece " << P;
      EXPECT_LT(rel_l2(lse, ref_lse), 1e-6) << "Tk " << Tk << " piece " << P;
    }
  }
}

TEST(MlaPieces, PieceAfterAQueryIsEmpty) {
  // Keys 10..14 as a piece; queries at positions 8..12 see 0, 0, 1, 2, 3 of them.
  const Attn a = make(15, 7, 5);  // queries at 8..14
  std::vector<float> o(size_t(a.Tq * H * Dv), 7.0f), lse(size_t(a.Tq * H), 7.0f);
  piece(a, 10, 5, o.data(), lse.data());
  for (int64_t t = 0; t < a.Tq; ++t)
    for (int64_t h = 0; h < H; ++h) {
      const bool empty = 8 + t < 10;
      EXPECT_EQ(std::isinf(lse[t * H + h]) && lse[t * H + h] < 0, empty) << t;
      for (int64_t d = 0; d < Dv && empty; ++d) EXPECT_EQ(o[(t * H + h) * Dv + d], 0.0f);
    }
  // A query at position 10 sees exactly key 10: output is v_10, lse its one score.
  const int64_t t = 2, h = 1;
  for (int64_t d = 0; d < Dv; ++d) EXPECT_FLOAT_EQ(o[(t * H + h) * Dv + d], a.v[(10 * H + h) * Dv + d]);
  double s = 0;
  for (int64_t i = 0; i < Dq; ++i) s += double(a.q[(t * H + h) * Dq + i]) * a.k[(10 * H + h) * Dq + i];
  EXPECT_NEAR(lse[t * H + h], s * kScale, 1e-5);
}

TEST(MlaMerge, EmptySidesAliasingAndOrder) {
  const int64_t T = 4;
  auto oa = randn(size_t(T * H * Dv), 1), ob = randn(size_t(T * H * Dv), 2);
  auto la = randn(size_t(T * H), 3, 3.0f), lb = randn(size_t(T * H), 4, 3.0f);
  // Row 0: b empty; row 1: a empty; row 2: both empty; row 3: far apart (exp of the gap underflows fp32).
  for (int64_t h = 0; h < H; ++h) {
    lb[0 * H + h] = kNegInf;
    la[1 * H + h] = kNegInf;
    la[2 * H + h] = lb[2 * H + h] = kNegInf;
    la[3 * H + h] = 200.0f + float(h);
    lb[3 * H + h] = 50.0f;
  }
  std::vector<float> o(oa.size()), lse(la.size()), o2(oa.size()), lse2(la.size());
  kernels::run_mla_merge_cpu({.o_a = oa.data(), .lse_a = la.data(), .o_b = ob.data(), .lse_b = lb.data(),
                              .o = o.data(), .lse = lse.data(), .T = T, .H = H, .Dv = Dv});
  kernels::run_mla_merge_cpu({.o_a = ob.data(), .lse_a = lb.data(), .o_b = oa.data(), .lse_b = la.data(),
                              .o = o2.data(), .lse = lse2.data(), .T = T, .H = H, .Dv = Dv});
  EXPECT_EQ(o, o2);
  EXPECT_EQ(lse, lse2);
  for (int64_t h = 0; h < H; ++h) {
    for (int64_t d = 0; d < Dv; ++d) {
      EXPECT_EQ(o[(0 * H + h) * Dv + d], oa[(0 * H + h) * Dv + d]);
      EXPECT_EQ(o[(1 * H + h) * Dv + d], ob[(1 * H + h) * Dv + d]);
      EXPECT_EQ(o[(2 * H + h) * Dv + d], 0.0f);
      EXPECT_FLOAT_EQ(o[(3 * H + h) * Dv + d], oa[(3 * H + h) * Dv + d]);
    }
    EXPECT_EQ(lse[0 * H + h], la[0 * H + h]);
    EXPECT_EQ(lse[1 * H + h], lb[1 * H + h]);
    EXPECT_TRUE(std::isinf(lse[2 * H + h]) && lse[2 * H + h] < 0);
    EXPECT_FLOAT_EQ(lse[3 * H + h], la[3 * H + h]);
  }
  // Equal lse: the average, lse + ln 2. In place into a (o aliases o_a).
  std::vector<float> eq(size_t(T * H), 1.5f), acc = oa;
  kernels::run_mla_merge_cpu({.o_a = acc.data(), .lse_a = eq.data(), .o_b = ob.data(), .lse_b = eq.data(),
                              .o = acc.data(), .lse = eq.data(), .T = T, .H = H, .Dv = Dv});
  for (size_t i = 0; i < acc.size(); ++i) EXPECT_NEAR(acc[i], 0.5f * (oa[i] + ob[i]), 1e-6);
  for (float x : eq) EXPECT_NEAR(x, 1.5 + std::log(2.0), 1e-6);
}

TEST(MlaMerge, StridedRows) {
  // Outputs inside wider rows (token stride > H·Dv) are read and written at their stride only.
  const int64_t T = 3, ld = H * Dv + 5;
  auto oa = randn(size_t(T * ld), 7), ob = randn(size_t(T * ld), 8);
  auto la = randn(size_t(T * H), 9), lb = randn(size_t(T * H), 10);
  std::vector<float> o(size_t(T * ld), 42.0f), lse(size_t(T * H));
  kernels::run_mla_merge_cpu({.o_a = oa.data(), .lse_a = la.data(), .o_b = ob.data(), .lse_b = lb.data(),
                              .o = o.data(), .lse = lse.data(), .T = T, .H = H, .Dv = Dv, .lda = ld, .ldb = ld,
                              .ldo = ld});
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < H; ++h) {
      const double a = la[t * H + h], b = lb[t * H + h], m = std::max(a, b);
      const double wa = std::exp(a - m), wb = std::exp(b - m);
      EXPECT_NEAR(lse[t * H + h], m + std::log(wa + wb), 1e-5);
      for (int64_t d = 0; d < Dv; ++d)
        EXPECT_NEAR(o[t * ld + h * Dv + d], (wa * oa[t * ld + h * Dv + d] + wb * ob[t * ld + h * Dv + d]) / (wa + wb),
                    1e-5);
    }
    for (int64_t d = H * Dv; d < ld; ++d) EXPECT_EQ(o[t * ld + d], 42.0f);
  }
}

}  // namespace
}  // namespace ds::test
