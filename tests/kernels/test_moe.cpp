// MoE routing (grouped top-k with num_expert_group > 1 and topk_group < groups; biased weights) against
// a straightforward reference written here, and the expert evaluation against per-token MLPs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>

#include "core/error.h"
#include "kernel_test_util.h"
#include "kernels/moe/op.h"

namespace ds::test {
namespace {

struct Route {
  std::vector<int32_t> ids;
  std::vector<double> w;
};

// Reference: score every group by its two best biased scores, keep the best groups, take the best
// experts among them, weight by (un)biased scores, renormalise, scale.
Route reference_route(const float* logits, const float* bias, int E, int groups, int topk_group, int k,
                      double scaling, bool biased) {
  std::vector<double> s(E), sel(E);
  for (int e = 0; e < E; ++e) {
    s[e] = 1.0 / (1.0 + std::exp(-double(logits[e])));
    sel[e] = s[e] + bias[e];
  }
  const int per = E / groups;
  std::vector<std::pair<double, int>> gs;
  for (int g = 0; g < groups; ++g) {
    std::vector<double> v(sel.begin() + g * per, sel.begin() + (g + 1) * per);
    std::sort(v.rbegin(), v.rend());
    gs.push_back({v[0] + v[1], g});
  }
  std::sort(gs.begin(), gs.end(), [](auto a, auto b) { return a.first > b.first || (a.first == b.first && a.second < b.second); });
  std::vector<std::pair<double, int>> cand;
  for (int i = 0; i < topk_group; ++i)
    for (int e = gs[i].second * per; e < (gs[i].second + 1) * per; ++e) cand.push_back({sel[e], e});
  std::sort(cand.begin(), cand.end(), [](auto a, auto b) { return a.first > b.first || (a.first == b.first && a.second < b.second); });
  Route r;
  double sum = 0;
  for (int i = 0; i < k; ++i) {
    r.ids.push_back(cand[i].second);
    r.w.push_back(biased ? sel[cand[i].second] : s[cand[i].second]);
    sum += r.w.back();
  }
  for (auto& w : r.w) w = w / (sum + 1e-20) * scaling;
  return r;
}

void check_routing(int E, int groups, int topk_group, int k, bool biased, uint64_t seed) {
  const int T = 50;
  const auto logits = randn(size_t(T * E), seed, 2.0f);
  const auto bias = uniform(size_t(E), seed + 1, -0.3f, 0.3f);
  std::vector<int32_t> ids(size_t(T * k));
  std::vector<float> w(size_t(T * k));
  kernels::run_moe_route_cpu({.logits = logits.data(), .bias = bias.data(), .topk_ids = ids.data(),
                              .topk_weights = w.data(), .tokens = T, .num_experts = E, .top_k = k,
                              .num_groups = groups, .topk_groups = topk_group, .renormalize = true, .scale = 2.446f,
                              .biased_weights = biased});
  int outside_best_group = 0;
  for (int t = 0; t < T; ++t) {
    const auto r = reference_route(&logits[t * E], bias.data(), E, groups, topk_group, k, 2.446, biased);
    for (int i = 0; i < k; ++i) {
      EXPECT_EQ(ids[t * k + i], r.ids[i]) << "token " << t << " rank " << i;
      EXPECT_NEAR(w[t * k + i], r.w[i], 1e-6) << "token " << t << " rank " << i;
    }
    // Grouping matters: the plain top-k over all experts differs for some tokens.
    const auto flat = reference_route(&logits[t * E], bias.data(), E, 1, 1, k, 2.446, biased);
    outside_best_group += flat.ids != r.ids;
  }
  if (groups > 1) {
    EXPECT_GT(outside_best_group, 0);
  }
}

TEST(MoeRoute, GroupedTopK) { check_routing(32, 8, 3, 4, false, 1); }
TEST(MoeRoute, GroupedTopKBiasedWeights) { check_routing(32, 4, 2, 6, true, 2); }
TEST(MoeRoute, SingleGroup) { check_routing(16, 1, 1, 4, false, 3); }

TEST(MoeRoute, BiasSelectsButDoesNotWeight) {
  // Expert 2 has the lowest score but a large bias: chosen, weighted by its unbiased score.
  const std::vector<float> logits = {2.0f, 1.0f, -3.0f, 0.0f};
  const std::vector<float> bias = {0.0f, 0.0f, 5.0f, 0.0f};
  for (bool biased : {false, true}) {
    std::vector<int32_t> ids(2);
    std::vector<float> w(2);
    kernels::run_moe_route_cpu({.logits = logits.data(), .bias = bias.data(), .topk_ids = ids.data(),
                                .topk_weights = w.data(), .tokens = 1, .num_experts = 4, .top_k = 2,
                                .renormalize = true, .scale = 1.0f, .biased_weights = biased});
    EXPECT_EQ(ids, (std::vector<int32_t>{2, 0}));
    const double s2 = 1 / (1 + std::exp(3.0)) + (biased ? 5.0 : 0.0), s0 = 1 / (1 + std::exp(-2.0));
    EXPECT_NEAR(w[0], s2 / (s2 + s0), 1e-6);
    EXPECT_NEAR(w[1], s0 / (s2 + s0), 1e-6);
  }
}

TEST(MoeRoute, ForcedIdsKeepTheirScores) {
  // Forced experts are used as given (not the top-k), weighted by their own unbiased scores.
  const std::vector<float> logits = {2.0f, 1.0f, -3.0f, 0.0f};
  const std::vector<float> bias = {0.0f, 0.0f, 5.0f, 0.0f};
  const std::vector<int32_t> forced = {3, 1};
  std::vector<int32_t> ids(2);
  std::vector<float> w(2);
  kernels::run_moe_route_cpu({.logits = logits.data(), .bias = bias.data(), .topk_ids = ids.data(),
                              .topk_weights = w.data(), .tokens = 1, .num_experts = 4, .top_k = 2,
                              .renormalize = true, .scale = 2.0f, .forced_ids = forced.data()});
  EXPECT_EQ(ids, forced);
  const double s3 = 0.5, s1 = 1 / (1 + std::exp(-1.0));
  EXPECT_NEAR(w[0], 2 * s3 / (s3 + s1), 1e-6);
  EXPECT_NEAR(w[1], 2 * s1 / (s3 + s1), 1e-6);
}

TEST(MoeRoute, SharedExpertColumnAndRowStride) {
  // With shared_expert_id the rows are ldk = top_k + 1 wide: the routed choice (same as without it) and
  // then the shared expert with weight 1, as the GPU's routing writes them.
  const int T = 7, E = 16, k = 4;
  const auto logits = randn(size_t(T * E), 11, 2.0f);
  const auto bias = uniform(size_t(E), 12, -0.3f, 0.3f);
  std::vector<int32_t> ids(size_t(T * k)), ids_s(size_t(T * (k + 1)), -7);
  std::vector<float> w(size_t(T * k)), w_s(size_t(T * (k + 1)), -7.f);
  kernels::MoeRouteParams p{.logits = logits.data(), .bias = bias.data(), .topk_ids = ids.data(),
                            .topk_weights = w.data(), .tokens = T, .num_experts = E, .top_k = k, .num_groups = 4,
                            .topk_groups = 2, .scale = 2.446f};
  kernels::run_moe_route_cpu(p);
  p.topk_ids = ids_s.data();
  p.topk_weights = w_s.data();
  p.shared_expert_id = E;
  EXPECT_EQ(kernels::moe_route_ldk(p), k + 1);
  kernels::run_moe_route_cpu(p);
  for (int t = 0; t < T; ++t) {
    for (int i = 0; i < k; ++i) {
      EXPECT_EQ(ids_s[t * (k + 1) + i], ids[t * k + i]) << "token " << t;
      EXPECT_EQ(w_s[t * (k + 1) + i], w[t * k + i]) << "token " << t;
    }
    EXPECT_EQ(ids_s[t * (k + 1) + k], E);
    EXPECT_EQ(w_s[t * (k + 1) + k], 1.0f);
  }
  p.ldk = k;  // too narrow for the shared column
  EXPECT_THROW(kernels::run_moe_route_cpu(p), Error);
}

TEST(MoeExperts, MatchesPerTokenMlps) {
  const int64_t T = 9, D = 24, I = 10, E = 5, k = 2;
  std::vector<std::vector<float>> w1, w2, w3;
  std::vector<const float*> p1, p2, p3;
  for (int e = 0; e < E; ++e) {
    w1.push_back(randn(size_t(I * D), 10 + e, 0.3f));
    w3.push_back(randn(size_t(I * D), 20 + e, 0.3f));
    w2.push_back(randn(size_t(D * I), 30 + e, 0.3f));
  }
  for (int e = 0; e < E; ++e) p1.push_back(w1[e].data()), p2.push_back(w2[e].data()), p3.push_back(w3[e].data());
  const auto x = randn(size_t(T * D), 7);
  std::vector<int32_t> ids(size_t(T * k));
  std::vector<float> wt(size_t(T * k));
  for (int64_t t = 0; t < T; ++t) {
    ids[t * k] = int32_t(t % E);
    ids[t * k + 1] = int32_t((t * 3 + 1) % E);
    if (ids[t * k + 1] == ids[t * k]) ids[t * k + 1] = int32_t((ids[t * k] + 1) % E);
    wt[t * k] = 0.7f, wt[t * k + 1] = 0.4f;
  }
  std::vector<float> y(size_t(T * D), 0.5f);
  kernels::run_moe_experts_cpu({.x = x.data(), .ids = ids.data(), .weights = wt.data(), .w1 = p1.data(),
                                .w3 = p3.data(), .w2 = p2.data(), .y = y.data(), .T = T, .D = D, .I = I, .E = E,
                                .top_k = k});
  std::vector<double> ref(size_t(T * D), 0.5);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < k; ++j) {
      const int e = ids[t * k + j];
      std::vector<double> h(static_cast<size_t>(I));
      for (int64_t i = 0; i < I; ++i) {
        double g = 0, u = 0;
        for (int64_t d = 0; d < D; ++d) g += double(w1[e][i * D + d]) * x[t * D + d], u += double(w3[e][i * D + d]) * x[t * D + d];
        h[i] = g / (1 + std::exp(-g)) * u;
      }
      for (int64_t d = 0; d < D; ++d) {
        double acc = 0;
        for (int64_t i = 0; i < I; ++i) acc += double(w2[e][d * I + i]) * h[i];
        ref[t * D + d] += wt[t * k + j] * acc;
      }
    }
  EXPECT_LT(rel_l2(y, ref), 1e-6);
}

}  // namespace
}  // namespace ds::test
