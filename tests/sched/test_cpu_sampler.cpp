#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <numeric>

#include "core/error.h"
#include "sampling/cpu_sampler.h"
#include "sampling/penalties.h"
#include "sampling/rng.h"

using namespace ds;

namespace {

SampleParams greedy() {
  SampleParams p;
  p.temperature = 0.0f;
  return p;
}

// Exact log-softmax in double.
std::vector<double> log_softmax(const std::vector<float>& x) {
  double mx = -INFINITY;
  for (float v : x) mx = std::max(mx, double(v));
  double s = 0;
  for (float v : x) s += std::exp(double(v) - mx);
  std::vector<double> out;
  for (float v : x) out.push_back(double(v) - mx - std::log(s));
  return out;
}

// Empirical token frequencies over n draws (steps 0..n-1).
std::map<int32_t, int> histogram(const std::vector<float>& logits, SampleParams p, int n) {
  std::map<int32_t, int> h;
  for (int i = 0; i < n; ++i) {
    p.step = uint64_t(i);
    ++h[sample_row_cpu(logits.data(), int(logits.size()), p).token];
  }
  return h;
}

}  // namespace

TEST(Rng, UniformIsInRangeAndCounterBased) {
  double sum = 0;
  for (uint64_t i = 0; i < 100000; ++i) {
    double u = uniform01(42, i);
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
  }
  // Mean of 1e5 uniforms: standard error 0.29 / sqrt(1e5) = 9e-4; 5 sigma.
  EXPECT_NEAR(sum / 100000, 0.5, 5 * 9.2e-4);
  EXPECT_EQ(uniform01(7, 3), uniform01(7, 3));
  EXPECT_NE(uniform01(7, 3), uniform01(7, 4));
  EXPECT_NE(uniform01(7, 3), uniform01(8, 3));
}

TEST(CpuSampler, GreedyPicksArgmaxLowestIdOnTies) {
  std::vector<float> x{0.1f, 2.0f, -1.0f, 2.0f, 1.9f};
  EXPECT_EQ(sample_row_cpu(x.data(), 5, greedy()).token, 1);
  SampleParams k1;  // top_k == 1 is greedy whatever the temperature
  k1.top_k = 1;
  k1.temperature = 5.0f;
  EXPECT_EQ(sample_row_cpu(x.data(), 5, k1).token, 1);
}

TEST(CpuSampler, LogprobsAreLogSoftmaxOfRawLogits) {
  std::vector<float> x{0.5f, -1.25f, 3.0f, 2.0f, 0.0f, -7.0f};
  auto ls = log_softmax(x);
  SampleParams p = greedy();
  p.num_logprobs = 3;
  p.repetition_penalty = 2.0f;  // penalties change the choice, not the reported logprobs
  const SeqPenalties pen({2}, {}, 6);
  SampleResult r = sample_row_cpu(x.data(), 6, p, &pen);
  EXPECT_EQ(r.token, 3);  // 3.0 / 2 = 1.5 < 2.0
  EXPECT_NEAR(r.logprob, ls[3], 1e-6);
  ASSERT_EQ(r.top_logprobs.size(), 3u);
  EXPECT_EQ(r.top_logprobs[0].first, 2);
  EXPECT_EQ(r.top_logprobs[1].first, 3);
  EXPECT_EQ(r.top_logprobs[2].first, 0);
  for (auto [id, lp] : r.top_logprobs) EXPECT_NEAR(lp, ls[size_t(id)], 1e-6);
  p.num_logprobs = 0;
  EXPECT_TRUE(sample_row_cpu(x.data(), 6, p, &pen).top_logprobs.empty());
}

TEST(CpuSampler, RepetitionPenaltyHfSemantics) {
  // Positive logits are divided, negative ones multiplied; each token once, prompt + output.
  std::vector<float> x{2.0f, 1.5f, -0.1f, -0.5f};
  SampleParams p = greedy();
  p.repetition_penalty = 1.5f;
  SeqPenalties pen({0, 0, 0}, {}, 4);
  EXPECT_EQ(sample_row_cpu(x.data(), 4, p, &pen).token, 1);  // 2 / 1.5 = 1.33 < 1.5
  pen = SeqPenalties({0}, {1}, 4);
  EXPECT_EQ(sample_row_cpu(x.data(), 4, p, &pen).token, 0);  // 1.33 vs 1.0
  EXPECT_EQ(sample_row_cpu(x.data(), 4, p).token, 0);        // no history: no penalty
  std::vector<float> neg{-0.1f, -0.12f};
  pen = SeqPenalties({}, {0}, 2);
  EXPECT_EQ(sample_row_cpu(neg.data(), 2, p, &pen).token, 1);  // -0.15 < -0.12
}

// A tiny penalty (inside the server's documented range) used to turn a penalized logit into inf and
// then every candidate into NaN: "sampler: no candidate token".
TEST(CpuSampler, TinyRepetitionPenaltyKeepsCandidates) {
  std::vector<float> x{20.0f, 25.0f, -3.0f, 1.0f};
  const SeqPenalties history({0, 2}, {}, 4);
  for (float penalty : {1e-38f, 1e-30f, 1e-7f}) {
    SampleParams p;  // sampled, not greedy: the path that collected candidates
    p.temperature = 1.0f;
    p.repetition_penalty = penalty;
    p.seed = 7;
    SampleResult r = sample_row_cpu(x.data(), 4, p, &history);
    EXPECT_EQ(r.token, 0) << penalty;  // the penalized positive logit now outweighs everything
    p.temperature = 0.0f;
    EXPECT_EQ(sample_row_cpu(x.data(), 4, p, &history).token, 0) << penalty;
  }
}

TEST(CpuSampler, FrequencyAndPresencePenaltiesOnOutputOnly) {
  std::vector<float> x{3.0f, 2.0f, 1.0f};
  SampleParams p = greedy();
  SeqPenalties pen({1, 1, 1, 1}, {}, 3);
  pen.add_output(0);  // incrementally, as the backends keep it
  pen.add_output(0);
  p.frequency_penalty = 0.4f;  // 3 - 0.8 = 2.2 > 2.0
  EXPECT_EQ(sample_row_cpu(x.data(), 3, p, &pen).token, 0);
  p.frequency_penalty = 0.6f;  // 3 - 1.2 = 1.8 < 2.0
  EXPECT_EQ(sample_row_cpu(x.data(), 3, p, &pen).token, 1);
  p.frequency_penalty = 0.0f;
  p.presence_penalty = 0.9f;  // 2.1 > 2.0: presence counts once
  EXPECT_EQ(sample_row_cpu(x.data(), 3, p, &pen).token, 0);
  p.presence_penalty = 1.1f;
  EXPECT_EQ(sample_row_cpu(x.data(), 3, p, &pen).token, 1);
  p.presence_penalty = -2.5f;  // negative penalties encourage: 1 + 2.5 > 3
  pen = SeqPenalties({1, 1, 1, 1}, {2}, 3);
  EXPECT_EQ(sample_row_cpu(x.data(), 3, p, &pen).token, 2);
}

TEST(CpuSampler, SeededSamplingIsReproducibleAndIndependentOfTheBatch) {
  std::vector<float> row(64);
  for (int i = 0; i < 64; ++i) row[size_t(i)] = float(std::sin(i * 1.7));
  SampleParams p;
  p.temperature = 1.0f;
  p.seed = 1234;
  p.step = 5;
  int32_t alone = sample_row_cpu(row.data(), 64, p).token;
  // The same row in a batch of 8 at position 5, among other seeds and steps.
  std::vector<float> batch;
  std::vector<SampleParams> params;
  for (int b = 0; b < 8; ++b) {
    batch.insert(batch.end(), row.begin(), row.end());
    SampleParams q = p;
    if (b != 5) {
      q.seed = uint64_t(b);
      q.step = uint64_t(b * 3);
    }
    params.push_back(q);
  }
  auto out = sample_cpu(batch.data(), 8, 64, params);
  EXPECT_EQ(out[5].token, alone);
  // Over steps the draws differ (not a constant stream).
  std::set<int32_t> seen;
  for (uint64_t s = 0; s < 50; ++s) {
    p.step = s;
    seen.insert(sample_row_cpu(row.data(), 64, p).token);
  }
  EXPECT_GT(seen.size(), 10u);
}

TEST(CpuSampler, TemperatureSamplingFollowsTheSoftmax) {
  // p = softmax(x / T) with T = 2: compare frequencies over 20000 draws within 5 sigma.
  std::vector<float> x{1.0f, 2.0f, 0.0f, 3.0f};
  SampleParams p;
  p.temperature = 2.0f;
  p.seed = 9;
  const int n = 20000;
  auto h = histogram(x, p, n);
  std::vector<float> xt;
  for (float v : x) xt.push_back(v / 2.0f);
  auto ls = log_softmax(xt);
  for (int t = 0; t < 4; ++t) {
    double q = std::exp(ls[size_t(t)]);
    double sigma = std::sqrt(q * (1 - q) / n);
    EXPECT_NEAR(double(h[t]) / n, q, 5 * sigma) << "token " << t;
  }
}

TEST(CpuSampler, TopKKeepsOnlyTheKMostLikely) {
  std::vector<float> x{1.0f, 0.9f, 0.8f, 0.7f, 0.6f, 0.5f};
  SampleParams p;
  p.top_k = 2;
  p.seed = 3;
  auto h = histogram(x, p, 4000);
  EXPECT_EQ(h.size(), 2u);
  EXPECT_GT(h[0], 0);
  EXPECT_GT(h[1], 0);
  // Renormalised over the two: p0 = 1 / (1 + e^-0.1) = 0.525.
  EXPECT_NEAR(h[0] / 4000.0, 0.52498, 5 * std::sqrt(0.25 / 4000));
}

TEST(CpuSampler, TopPKeepsTheSmallestSetReachingP) {
  // Probabilities 0.5, 0.25, 0.125, 0.125 (log-space logits).
  std::vector<float> x{std::log(0.5f), std::log(0.25f), std::log(0.125f), std::log(0.125f)};
  SampleParams p;
  p.seed = 11;
  p.top_p = 0.7f;  // 0.5 < 0.7 <= 0.75: keeps {0, 1}
  auto h = histogram(x, p, 6000);
  EXPECT_EQ(h.size(), 2u);
  EXPECT_NEAR(h[0] / 6000.0, 2.0 / 3.0, 5 * std::sqrt(2.0 / 9 / 6000));
  p.top_p = 0.5f;  // exactly the first token's mass: keeps {0}
  EXPECT_EQ(histogram(x, p, 200).size(), 1u);
  p.top_p = 0.8f;  // needs the third: ties at 0.125 are broken by the lower id
  h = histogram(x, p, 6000);
  EXPECT_EQ(h.size(), 3u);
  EXPECT_EQ(h.count(3), 0u);
}

TEST(CpuSampler, MinPDropsTokensBelowAFractionOfTheBest) {
  // Relative probabilities 1, 0.5, 0.2, 0.05.
  std::vector<float> x{0.0f, std::log(0.5f), std::log(0.2f), std::log(0.05f)};
  SampleParams p;
  p.seed = 5;
  p.min_p = 0.3f;
  auto h = histogram(x, p, 3000);
  EXPECT_EQ(h.size(), 2u);
  EXPECT_EQ(h.count(2) + h.count(3), 0u);
  p.min_p = 0.1f;
  h = histogram(x, p, 3000);
  EXPECT_EQ(h.size(), 3u);
  EXPECT_EQ(h.count(3), 0u);
}

TEST(CpuSampler, MinusInfinityIsNeverSampledAndNaNIsAnError) {
  std::vector<float> x{-INFINITY, 0.0f, -INFINITY, 0.0f};
  SampleParams p;
  p.seed = 2;
  auto h = histogram(x, p, 500);
  EXPECT_EQ(h.count(0) + h.count(2), 0u);
  x[1] = NAN;
  EXPECT_THROW(sample_row_cpu(x.data(), 4, p), Error);
  std::vector<SampleParams> two(2);
  EXPECT_THROW(sample_cpu(x.data(), 1, 4, two), Error);
}

// Token masks and logit_bias (the engine's constrained decoding and OpenAI logit_bias).
TEST(CpuSampler, TokenMaskLeavesOnlyAllowedTokens) {
  const int V = 100;
  std::vector<float> logits(V);
  for (int i = 0; i < V; ++i) logits[size_t(i)] = float(i % 17) * 0.3f;
  StepMasks masks(2, V);
  for (int32_t t : {3, 40, 41, 99}) masks.row(0)[t >> 5] |= 1u << (t & 31);
  masks.set_has(0, true);  // row 1 stays unmasked
  std::vector<SampleParams> ps(2, greedy());
  auto out = sample_cpu(logits.data(), 1, V, {ps[0]}, {}, nullptr);
  EXPECT_EQ(out[0].token, 16);  // unmasked argmax (16 % 17 = 16 first)
  std::vector<float> two(logits);
  two.insert(two.end(), logits.begin(), logits.end());
  out = sample_cpu(two.data(), 2, V, ps, {}, &masks);
  EXPECT_EQ(out[0].token, 99);  // 99 % 17 = 14: the best allowed (3, 40, 41: 3, 6, 7)
  EXPECT_EQ(out[1].token, 16);
  // Logprobs are of the raw logits.
  EXPECT_NEAR(out[0].logprob, log_softmax(logits)[99], 1e-5);
  // Sampling draws only allowed tokens.
  SampleParams p;
  p.temperature = 1.0f;
  for (int i = 0; i < 200; ++i) {
    p.step = uint64_t(i);
    const int32_t t = sample_row_cpu(logits.data(), V, p, nullptr, masks.row(0)).token;
    EXPECT_TRUE(t == 3 || t == 40 || t == 41 || t == 99) << t;
  }
  StepMasks empty(1, V);
  empty.set_has(0, true);
  EXPECT_THROW(sample_cpu(logits.data(), 1, V, {ps[0]}, {}, &empty), Error);
}

TEST(CpuSampler, LogitBiasShiftsTheChoice) {
  std::vector<float> logits = {1.0f, 3.0f, 2.0f, 0.5f};
  SampleParams p = greedy();
  EXPECT_EQ(sample_row_cpu(logits.data(), 4, p).token, 1);
  p.logit_bias = std::make_shared<const std::vector<std::pair<int32_t, float>>>(
      std::vector<std::pair<int32_t, float>>{{3, 5.0f}, {1, -100.0f}});
  const SampleResult r = sample_row_cpu(logits.data(), 4, p);
  EXPECT_EQ(r.token, 3);
  EXPECT_NEAR(r.logprob, log_softmax(logits)[3], 1e-5);  // raw logits
  p.logit_bias = std::make_shared<const std::vector<std::pair<int32_t, float>>>(
      std::vector<std::pair<int32_t, float>>{{0, -100.0f}, {1, -100.0f}, {2, -100.0f}});
  p.temperature = 1.0f;
  for (int i = 0; i < 50; ++i) {
    p.step = uint64_t(i);
    EXPECT_EQ(sample_row_cpu(logits.data(), 4, p).token, 3);
  }
}

// A scoring row (SampleParams::forced_token, prompt logprobs): the given token with its log-softmax and the top
// alternatives of the raw logits, whatever the penalties, bias or mask would do; the penalty history skips it.
TEST(CpuSampler, ScoringRowReportsTheGivenTokenUnderTheRawLogits) {
  const std::vector<float> x{0.5f, 3.0f, -1.0f, 2.0f, 1.0f};
  const auto want = log_softmax(x);
  SampleParams p = greedy();
  p.forced_token = 2;  // not the argmax
  p.num_logprobs = 2;
  const SampleResult r = sample_row_cpu(x.data(), int(x.size()), p);
  EXPECT_EQ(r.token, 2);
  EXPECT_NEAR(r.logprob, want[2], 1e-6);
  ASSERT_EQ(r.top_logprobs.size(), 2u);
  EXPECT_EQ(r.top_logprobs[0].first, 1);
  EXPECT_EQ(r.top_logprobs[1].first, 3);
  EXPECT_NEAR(r.top_logprobs[0].second, want[1], 1e-6);
  EXPECT_EQ(r.rank, 5);  // the smallest of five logits
  p.forced_token = 3;
  EXPECT_EQ(sample_row_cpu(x.data(), int(x.size()), p).rank, 2);
  p.num_logprobs = -1;  // no logprobs asked: no rank
  EXPECT_EQ(sample_row_cpu(x.data(), int(x.size()), p).rank, 0);
  p.num_logprobs = 0;
  const std::vector<float> tie{1.0f, 2.0f, 2.0f, 0.0f};  // ties share the worse rank (vLLM counts >=)
  p.forced_token = 1;
  EXPECT_EQ(sample_row_cpu(tie.data(), int(tie.size()), p).rank, 2);
  p.forced_token = -1;  // the greedy token (lowest id of the tie)
  EXPECT_EQ(sample_row_cpu(tie.data(), int(tie.size()), p).rank, 2);
  p.forced_token = 5;  // outside the vocabulary
  EXPECT_THROW(sample_row_cpu(x.data(), int(x.size()), p), Error);

  PenaltyTracker tracker(5);
  SeqSampling scored;
  scored.seq_id = 7;
  scored.params = greedy();
  scored.params.forced_token = 4;
  SeqSampling sampled;
  sampled.seq_id = 7;
  sampled.params = greedy();
  sampled.params.repetition_penalty = 1.5f;
  sampled.history = true;
  sampled.prompt = {0};
  const std::vector<float> two = {0.5f, 3.0f, -1.0f, 2.0f, 1.0f, 0.5f, 3.0f, -1.0f, 2.0f, 1.0f};
  const auto out = sample_rows_cpu(two.data(), 5, {scored, sampled}, tracker);
  EXPECT_EQ(out[0].token, 4);
  EXPECT_EQ(out[1].token, 1);
  // the history holds the prompt and the sampled token only, not the scored one
  const SeqPenalties* pen = tracker.find(7);
  ASSERT_NE(pen, nullptr);
  EXPECT_EQ(pen->tokens(), (std::vector<int32_t>{0, 1}));
}
