// The CPU engine against the float64 reference on the tiny checkpoint: logits of every prompt length,
// per-layer hidden states and routing of len65, greedy continuations of len5 and len150.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "model_test_util.h"

namespace ds::test {
namespace {

constexpr double kTol = 1e-5;  // fp32 vs float64 on the same (bf16-exact) weights

// Full-sequence forward of `ids` with logits for every position.
std::vector<float> score(CpuBackend& b, const std::vector<int32_t>& ids, ForwardTrace* trace = nullptr) {
  ForwardBatch batch;
  batch.add(0, 0, ids, pages(0, int(ids.size() + 15) / 16), /*logits_all=*/true);
  b.set_trace(trace);
  std::vector<float> logits = forward_logits(b, batch);
  b.set_trace(nullptr);
  return logits;
}

class GoldenLogits : public ::testing::TestWithParam<int> {};

TEST_P(GoldenLogits, FullSequenceMatchesReference) {
  const int L = GetParam();
  const std::string key = "len" + std::to_string(L);
  auto b = tiny_backend();
  const auto logits = score(*b, reference().i32(key + ".ids"));
  const auto ref = reference().f32(key + ".logits");
  const double err = rel_l2(logits, ref);
  RecordProperty("rel_l2", std::to_string(err));
  std::printf("  len%-3d logits rel L2 %.3g\n", L, err);
  EXPECT_LT(err, kTol);
}

INSTANTIATE_TEST_SUITE_P(Lengths, GoldenLogits, ::testing::Values(1, 5, 63, 64, 65, 150, 300));

TEST(Golden, HiddenStatesAndRoutingOfLen65) {
  auto b = tiny_backend();
  ForwardTrace trace;
  score(*b, reference().i32("len65.ids"), &trace);
  const auto& cfg = b->config();
  ASSERT_EQ(int(trace.hidden.size()), cfg.num_layers + 1);
  for (int i = 0; i <= cfg.num_layers; ++i) {
    const auto ref = reference().f32("len65.hidden." + std::to_string(i));
    const double err = rel_l2(trace.hidden[size_t(i)], ref);
    std::printf("  hidden.%d rel L2 %.3g\n", i, err);
    EXPECT_LT(err, kTol) << "hidden state " << i;
  }
  const int k = cfg.moe.top_k;
  for (int l = 0; l < cfg.num_layers; ++l) {
    if (!cfg.is_moe(l)) continue;
    const auto ref_ids = reference().i32("len65.route_ids." + std::to_string(l));
    const auto ref_w = reference().f32("len65.route_w." + std::to_string(l));
    const auto& ids = trace.route_ids.at(l);
    const auto& w = trace.route_weights.at(l);
    ASSERT_EQ(ids.size(), ref_ids.size());
    double max_w_err = 0.0;
    for (size_t t = 0; t < ids.size() / size_t(k); ++t) {
      std::set<int32_t> a(ids.begin() + t * k, ids.begin() + (t + 1) * k);
      std::set<int32_t> r(ref_ids.begin() + t * k, ref_ids.begin() + (t + 1) * k);
      EXPECT_EQ(a, r) << "layer " << l << " token " << t;
      // Weights compared expert by expert.
      for (int i = 0; i < k; ++i)
        for (int j = 0; j < k; ++j)
          if (ids[t * k + i] == ref_ids[t * k + j])
            max_w_err = std::max(max_w_err, double(std::fabs(w[t * k + i] - ref_w[t * k + j])));
    }
    std::printf("  layer %d route weights max abs err %.3g\n", l, max_w_err);
    EXPECT_LT(max_w_err, 1e-5) << "layer " << l;
  }
}

// Greedy decoding: prefill, then one token at a time through the decode path.
std::vector<int32_t> greedy(CpuBackend& b, const std::vector<int32_t>& prompt, int n) {
  std::vector<int32_t> out;
  const auto table = pages(0, 32);
  ForwardBatch first;
  first.add(0, 0, prompt, table);
  std::vector<SampleParams> greedy_params(1);
  greedy_params[0].temperature = 0.0f;
  int32_t tok = forward_sample(b, first, greedy_params)[0].token;
  int64_t ctx = int64_t(prompt.size());
  for (int i = 0; i < n; ++i) {
    out.push_back(tok);
    if (i + 1 == n) break;
    ForwardBatch step;
    step.add(0, ctx++, {tok}, table);
    tok = forward_sample(b, step, greedy_params)[0].token;
  }
  return out;
}

TEST(Golden, GreedyContinuations) {
  for (const char* key : {"len5", "len150"}) {
    auto b = tiny_backend();
    const auto ref = reference().i32(std::string(key) + ".greedy");
    const auto got = greedy(*b, reference().i32(std::string(key) + ".ids"), int(ref.size()));
    EXPECT_EQ(got, ref) << key;
  }
}

}  // namespace
}  // namespace ds::test
