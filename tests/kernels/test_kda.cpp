// KDA ops: both recurrence forms against the golden float64 fixture (with an initial state), against an
// independent double-precision recurrence under strong decay, varlen batching, and the gate.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "kernel_test_util.h"
#include "kernels/kda/op.h"

namespace ds::test {
namespace {

using kernels::KdaParams;

struct KdaCase {
  KdaCase(int64_t t, int64_t h, int64_t k_, int64_t v_) : T(t), H(h), K(k_), V(v_) {}
  int64_t T, H, K, V;
  std::vector<float> q, k, v, g, beta, h0;
};

// Straightforward double-precision recurrence (spec §4.4), one sequence.
void naive_kda(const KdaCase& c, std::vector<double>* o, std::vector<double>* S) {
  const int64_t H = c.H, K = c.K, V = c.V;
  S->assign(c.h0.begin(), c.h0.end());
  o->assign(size_t(c.T * H * V), 0.0);
  std::vector<double> q(K), k(K), e(V);
  for (int64_t t = 0; t < c.T; ++t)
    for (int64_t h = 0; h < H; ++h) {
      double qq = 0, kk = 0;
      for (int64_t d = 0; d < K; ++d) {
        qq += double(c.q[(t * H + h) * K + d]) * c.q[(t * H + h) * K + d];
        kk += double(c.k[(t * H + h) * K + d]) * c.k[(t * H + h) * K + d];
      }
      for (int64_t d = 0; d < K; ++d) {
        q[d] = c.q[(t * H + h) * K + d] / std::sqrt(qq + 1e-6) / std::sqrt(double(K));
        k[d] = c.k[(t * H + h) * K + d] / std::sqrt(kk + 1e-6);
      }
      double* s = S->data() + h * K * V;
      for (int64_t d = 0; d < K; ++d)
        for (int64_t j = 0; j < V; ++j) s[d * V + j] *= std::exp(double(c.g[(t * H + h) * K + d]));
      for (int64_t j = 0; j < V; ++j) {
        double acc = 0;
        for (int64_t d = 0; d < K; ++d) acc += k[d] * s[d * V + j];
        e[j] = c.beta[t * H + h] * (c.v[(t * H + h) * V + j] - acc);
      }
      for (int64_t d = 0; d < K; ++d)
        for (int64_t j = 0; j < V; ++j) s[d * V + j] += k[d] * e[j];
      for (int64_t j = 0; j < V; ++j) {
        double acc = 0;
        for (int64_t d = 0; d < K; ++d) acc += q[d] * s[d * V + j];
        (*o)[size_t((t * H + h) * V + j)] = acc;
      }
    }
}

// Runs one form on one sequence with state slot 0 holding h0; returns o and the final state.
void run_form(bool chunked, const KdaCase& c, std::vector<float>* o, std::vector<float>* state, int chunk = 64) {
  *state = c.h0;
  o->assign(size_t(c.T * c.H * c.V), 0.0f);
  const int32_t cu[2] = {0, int32_t(c.T)}, slot = 0;
  KdaParams p{.q = c.q.data(), .k = c.k.data(), .v = c.v.data(), .g = c.g.data(), .beta = c.beta.data(),
              .o = o->data(), .state = state->data(), .cu_seqlens = cu, .slots = &slot, .num_seqs = 1,
              .H = c.H, .K = c.K, .V = c.V};
  p.chunk_size = chunk;
  if (chunked) kernels::run_kda_chunk_cpu(p);
  else kernels::run_kda_recurrent_cpu(p);
}

KdaCase random_case(int64_t T, int64_t H, int64_t K, int64_t V, float max_decay, uint64_t seed) {
  KdaCase c(T, H, K, V);
  c.q = randn(size_t(T * H * K), seed + 1);
  c.k = randn(size_t(T * H * K), seed + 2);
  c.v = randn(size_t(T * H * V), seed + 3);
  c.g = uniform(size_t(T * H * K), seed + 4, -max_decay, 0.0f);
  c.beta = uniform(size_t(T * H), seed + 5, 0.05f, 0.95f);
  c.h0 = randn(size_t(H * K * V), seed + 6, 0.5f);
  return c;
}

class KdaGolden : public ::testing::TestWithParam<int> {};

TEST_P(KdaGolden, BothFormsMatchFixture) {
  const SafetensorsFile f(std::string(DS_FIXTURES_DIR) + "/tiny/kda_ops.safetensors");
  const std::string p = fmt::format("T{}.", GetParam());
  KdaCase c(GetParam(), 2, 128, 128);
  c.q = golden_f32(f, p + "q");
  c.k = golden_f32(f, p + "k");
  c.v = golden_f32(f, p + "v");
  c.g = golden_f32(f, p + "g");
  c.beta = golden_f32(f, p + "beta");
  c.h0 = golden_f32(f, p + "h0");
  const auto o_ref = golden_f32(f, p + "o"), h_ref = golden_f32(f, p + "hT");
  for (bool chunked : {false, true}) {
    std::vector<float> o, hT;
    run_form(chunked, c, &o, &hT);
    const double eo = rel_l2(o, o_ref), eh = rel_l2(hT, h_ref);
    std::printf("  T=%-3d %-9s o rel L2 %.3g, hT rel L2 %.3g\n", GetParam(), chunked ? "chunked" : "recurrent",
                eo, eh);
    EXPECT_LT(eo, 1e-5) << (chunked ? "chunked" : "recurrent");
    EXPECT_LT(eh, 1e-5) << (chunked ? "chunked" : "recurrent");
  }
}

INSTANTIATE_TEST_SUITE_P(Lengths, KdaGolden, ::testing::Values(1, 17, 64, 100, 257));

// Decays of up to −30 per token per channel: cumulative in-chunk log-decays reach ~−1000, where
// exp(−Γ) would overflow; the chunked form must stay finite and agree with the recurrence.
TEST(Kda, StrongDecayBothFormsMatchDoubleReference) {
  const KdaCase c = random_case(150, 2, 64, 32, 30.0f, 7);
  std::vector<double> o_ref, s_ref;
  naive_kda(c, &o_ref, &s_ref);
  for (bool chunked : {false, true}) {
    std::vector<float> o, s;
    run_form(chunked, c, &o, &s);
    for (float x : o) ASSERT_TRUE(std::isfinite(x));
    EXPECT_LT(rel_l2(o, o_ref), 1e-5) << chunked;
    EXPECT_LT(rel_l2(s, s_ref), 1e-5) << chunked;
  }
}

TEST(Kda, ChunkSizesAgree) {
  const KdaCase c = random_case(130, 2, 32, 48, 1.0f, 11);
  std::vector<double> o_ref, s_ref;
  naive_kda(c, &o_ref, &s_ref);
  for (int chunk : {1, 16, 64, 200}) {
    std::vector<float> o, s;
    run_form(true, c, &o, &s, chunk);
    EXPECT_LT(rel_l2(o, o_ref), 1e-5) << "chunk " << chunk;
    EXPECT_LT(rel_l2(s, s_ref), 1e-5) << "chunk " << chunk;
  }
}

// Three sequences of different lengths with permuted slots in one call equal each run alone, bit for bit.
TEST(Kda, VarlenEqualsEachAlone) {
  const int64_t H = 2, K = 32, V = 16;
  const std::vector<int64_t> lens = {5, 64, 130};
  const std::vector<int32_t> slots = {2, 0, 1};
  std::vector<KdaCase> cases;
  for (size_t i = 0; i < lens.size(); ++i) cases.push_back(random_case(lens[i], H, K, V, 2.0f, 100 + 10 * i));
  KdaCase all(0, H, K, V);
  std::vector<int32_t> cu{0};
  std::vector<float> pool(size_t(3 * H * K * V));
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& c = cases[i];
    all.T += c.T;
    for (auto [dst, src] : {std::pair{&all.q, &c.q}, {&all.k, &c.k}, {&all.v, &c.v}, {&all.g, &c.g},
                            {&all.beta, &c.beta}})
      dst->insert(dst->end(), src->begin(), src->end());
    cu.push_back(int32_t(all.T));
    std::copy(c.h0.begin(), c.h0.end(), pool.begin() + slots[i] * H * K * V);
  }
  for (bool chunked : {false, true}) {
    std::vector<float> o(size_t(all.T * H * V)), state = pool;
    KdaParams p{.q = all.q.data(), .k = all.k.data(), .v = all.v.data(), .g = all.g.data(),
                .beta = all.beta.data(), .o = o.data(), .state = state.data(), .cu_seqlens = cu.data(),
                .slots = slots.data(), .num_seqs = 3, .H = H, .K = K, .V = V};
    if (chunked) kernels::run_kda_chunk_cpu(p);
    else kernels::run_kda_recurrent_cpu(p);
    for (size_t i = 0; i < cases.size(); ++i) {
      std::vector<float> oi, si;
      run_form(chunked, cases[i], &oi, &si);
      EXPECT_TRUE(std::equal(oi.begin(), oi.end(), o.begin() + cu[i] * H * V)) << "seq " << i;
      EXPECT_TRUE(std::equal(si.begin(), si.end(), state.begin() + slots[i] * H * K * V)) << "seq " << i;
    }
  }
}

// Already-normalised inputs with qk_l2norm off give what raw inputs give with it on.
TEST(Kda, ExternalNormalisationMatches) {
  KdaCase c = random_case(40, 2, 32, 32, 1.0f, 21);
  std::vector<float> o1, s1;
  run_form(true, c, &o1, &s1);
  KdaCase n = c;
  kernels::run_l2norm_cpu({.x = c.q.data(), .y = n.q.data(), .rows = c.T * c.H, .dim = c.K,
                           .scale = float(1.0 / std::sqrt(32.0))});
  kernels::run_l2norm_cpu({.x = c.k.data(), .y = n.k.data(), .rows = c.T * c.H, .dim = c.K});
  std::vector<float> o2(o1.size()), s2 = c.h0;
  const int32_t cu[2] = {0, 40}, slot = 0;
  kernels::run_kda_chunk_cpu({.q = n.q.data(), .k = n.k.data(), .v = n.v.data(), .g = n.g.data(),
                              .beta = n.beta.data(), .o = o2.data(), .state = s2.data(), .cu_seqlens = cu,
                              .slots = &slot, .num_seqs = 1, .H = 2, .K = 32, .V = 32, .scale = 1.0f,
                              .qk_l2norm = false});
  EXPECT_LT(rel_l2(o2, o1), 1e-6);
  EXPECT_LT(rel_l2(s2, s1), 1e-6);
}

TEST(Kda, GateIsSoftplusForm) {
  const int64_t T = 3, H = 2, K = 4;
  std::vector<float> z = {-30, -2, 0, 1, 5, 19, 21, 40, -1, 0.5f, 2, 3,
                          0, 0, 0, 0, 10, 20, 25, -5, 1, 1, 1, 1};
  const std::vector<float> a_log = {0.0f, std::log(4.0f)};
  const std::vector<float> dt = {0.5f, -0.5f, 0.0f, 0.0f, 1.0f, 0.0f, -1.0f, 0.0f};
  std::vector<float> g(z.size());
  kernels::run_kda_gate_cpu({.z = z.data(), .a_log = a_log.data(), .dt_bias = dt.data(), .g = g.data(),
                             .T = T, .H = H, .K = K});
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < H * K; ++c) {
      const double u = double(z[t * H * K + c]) + dt[c];
      const double sp = u > 20.0 ? u : std::log1p(std::exp(u));
      const double want = -std::exp(double(a_log[c / K])) * sp;
      EXPECT_NEAR(g[t * H * K + c], want, 1e-6 * std::max(1.0, std::fabs(want))) << t << "," << c;
    }
}

}  // namespace
}  // namespace ds::test
