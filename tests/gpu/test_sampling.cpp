// The GPU sampler against the CPU sampler (sampling/cpu_sampler.h) on the same logits: same filters,
// same uniform numbers, so the same tokens; logprobs of the raw logits within fp32 rounding.
#include <gtest/gtest.h>

#include <map>
#include <random>

#include "core/error.h"
#include "cuda/kernels/sampling.h"
#include "cuda/sampling_rows.h"
#include "gpu_test_util.h"
#include "sampling/cpu_sampler.h"
#include "sampling/rng.h"
#include "sampling/token_mask.h"

namespace ds::gpu::test {
namespace {

// The radix-select thresholds (DeviceContext::switches.sampling_radix) on or off for the runs below.
bool g_radix = false;

// One GPU sampling launch of the rows `prep` describes (token masks: null or one row per logits row,
// applied where prep marks the row masked): the tokens, logprobs and top lists it returns.
struct GpuSamples {
  std::vector<int32_t> tokens, top_ids, ranks;
  std::vector<float> logprobs, top_logprobs;
};

GpuSamples run_gpu_sampling(const std::vector<float>& logits, int rows, int V, const SamplingRows& prep,
                            const StepMasks* masks = nullptr) {
  const int max_lp = prep.max_logprobs;
  std::vector<uint32_t> hmask = masks ? std::vector<uint32_t>(masks->data(), masks->data() + size_t(rows) * masks->words())
                                      : std::vector<uint32_t>(1, 0u);
  auto dl = to_device(logits, DType::F32), drp = to_device_raw(prep.rows), dpt = to_device_raw(prep.pen_tokens),
       dpc = to_device_raw(prep.pen_counts), dmask = to_device_raw(hmask);
  DeviceBuffer work(sampling_workspace_floats(rows, V) * 4), tok(size_t(rows) * 4), lp(size_t(rows) * 4),
      rank(size_t(rows) * 4), tids(size_t(rows) * max_lp * 4), tlp(size_t(rows) * max_lp * 4);
  SamplingParams sp;
  sp.logits = dl.as<float>();
  sp.ld = V;
  sp.rows = rows;
  sp.vocab = V;
  sp.row_params = drp.as<SampleRow>();
  sp.pen_tokens = dpt.as<int32_t>();
  sp.pen_counts = dpc.as<int32_t>();
  sp.mask = dmask.as<uint32_t>();
  sp.mask_words = masks ? masks->words() : 0;
  sp.work = work.as<float>();
  sp.out_token = tok.as<int32_t>();
  sp.out_logprob = lp.as<float>();
  sp.out_rank = rank.as<int32_t>();
  sp.out_top_ids = tids.as<int32_t>();
  sp.out_top_logprobs = tlp.as<float>();
  sp.max_logprobs = max_lp;
  DeviceContext ctx = test_ctx();
  ctx.switches.sampling_radix = g_radix;
  run_sampling(sp, ctx);
  GpuSamples g;
  g.tokens = to_host_raw<int32_t>(tok.data(), size_t(rows));
  g.logprobs = to_host(lp.data(), size_t(rows), DType::F32);
  g.ranks = to_host_raw<int32_t>(rank.data(), size_t(rows));
  g.top_ids = to_host_raw<int32_t>(tids.data(), size_t(rows) * max_lp);
  g.top_logprobs = to_host(tlp.data(), size_t(rows) * max_lp, DType::F32);
  return g;
}

void SamplingMatchesCpuSamplerBody() {
  const int V = 163840;
  std::vector<SampleParams> ps;
  std::vector<const SeqPenalties*> pens;  // per row (null: no history)
  const SeqPenalties history({5, 7, 7, 9, 100000}, {7, 11, 11, 11, 163839}, V);
  auto add = [&](float temp, int top_k, float top_p, float min_p, uint64_t seed) {
    SampleParams p;
    p.temperature = temp;
    p.top_k = top_k;
    p.top_p = top_p;
    p.min_p = min_p;
    p.seed = seed;
    p.step = seed * 3 + 1;
    p.num_logprobs = int(seed % 6);
    ps.push_back(p);
    pens.push_back(nullptr);
  };
  add(0.f, -1, 1.f, 0.f, 1);      // greedy
  add(1.f, -1, 1.f, 0.f, 2);      // plain
  add(0.7f, 50, 1.f, 0.f, 3);     // top-k
  add(1.f, -1, 0.9f, 0.f, 4);     // top-p
  add(1.2f, -1, 1.f, 0.05f, 5);   // min-p
  add(0.9f, 40, 0.8f, 0.02f, 6);  // all three
  add(1.f, 1, 1.f, 0.f, 7);       // top_k 1 = greedy
  add(1.f, -1, 0.f, 0.f, 8);      // top_p 0: the best token
  for (uint64_t s = 9; s < 40; ++s) add(0.5f + 0.05f * float(s % 10), int(s % 3) * 20 - 1, 0.7f + 0.01f * float(s % 30), 0.f, s);
  // penalties: repetition with frequency/presence, each alone (prompt-only tokens count only for repetition)
  for (int i = 0; i < 6; ++i) {
    SampleParams p;
    p.temperature = i % 2 == 0 ? 0.f : 1.f;
    p.repetition_penalty = i < 4 ? 1.3f : 1.f;
    p.frequency_penalty = i == 4 ? 0.f : 0.5f * float(i);
    p.presence_penalty = i == 1 ? 0.f : 0.7f;
    p.seed = 100 + uint64_t(i);
    ps.push_back(p);
    pens.push_back(&history);
  }
  const int rows = int(ps.size());
  // logits with a few large values (peaked, like a model's) and exact ties to exercise tie-breaks
  auto logits = randn(size_t(rows) * V, 95, 2.f);
  for (int r = 0; r < rows; ++r) {
    float* l = logits.data() + size_t(r) * V;
    for (int j = 0; j < 30; ++j) l[(size_t(j) * 7919 + r * 13) % V] += 8.f + float(j % 5);
    l[7] = l[11] = 12.f;  // a tie among the best tokens
  }
  // the CUDA backend's host preparation
  const SamplingRows prep = prepare_sampling_rows(ps, pens);
  const int max_lp = prep.max_logprobs;
  const GpuSamples g = run_gpu_sampling(logits, rows, V, prep);
  const auto &gt = g.tokens, &gti = g.top_ids;
  const auto &gl = g.logprobs, &gtl = g.top_logprobs;
  auto ref = sample_cpu(logits.data(), rows, V, ps, pens);
  int distinct = 0;
  for (int r = 0; r < rows; ++r) {
    EXPECT_EQ(gt[size_t(r)], ref[size_t(r)].token) << "row " << r;
    EXPECT_NEAR(gl[size_t(r)], ref[size_t(r)].logprob, 1e-4) << "row " << r;
    if (ps[size_t(r)].num_logprobs >= 0) {
      EXPECT_EQ(g.ranks[size_t(r)], ref[size_t(r)].rank) << "row " << r;
    }
    ASSERT_EQ(int(ref[size_t(r)].top_logprobs.size()), std::max(0, ps[size_t(r)].num_logprobs));
    for (size_t i = 0; i < ref[size_t(r)].top_logprobs.size(); ++i) {
      EXPECT_EQ(gti[size_t(r) * max_lp + i], ref[size_t(r)].top_logprobs[i].first);
      EXPECT_NEAR(gtl[size_t(r) * max_lp + i], ref[size_t(r)].top_logprobs[i].second, 1e-4);
    }
    distinct += gt[size_t(r)] != gt[0];
  }
  EXPECT_GT(distinct, rows / 2);  // the draws really vary
}

TEST(GpuOps, SamplingMatchesCpuSampler) {
  DS_REQUIRE_GPU();
  with_switch_off_and_on(g_radix, "sampling_radix", SamplingMatchesCpuSamplerBody);
}

// Token masks and logit_bias (constrained decoding): the GPU sampler picks what the CPU sampler picks,
// greedy and sampled, masked rows among unmasked ones, biases beside penalties.
void SamplingWithMasksAndBiasMatchesCpuSamplerBody() {
  const int V = 163840, rows = 24;
  const SeqPenalties history({5, 7, 9}, {7, 11, 11}, V);
  std::vector<SampleParams> ps(static_cast<size_t>(rows));
  std::vector<const SeqPenalties*> pens(static_cast<size_t>(rows), nullptr);
  StepMasks masks(rows, V);
  std::mt19937 rng(5);
  for (int r = 0; r < rows; ++r) {
    SampleParams& p = ps[size_t(r)];
    p.temperature = r % 3 == 0 ? 0.f : 0.8f;
    p.top_k = r % 4 == 1 ? 20 : -1;
    p.top_p = r % 5 == 2 ? 0.9f : 1.f;
    p.seed = 300 + uint64_t(r);
    p.num_logprobs = r % 4;
    if (r % 2 == 0) {  // masked: a few hundred allowed tokens, some of them among the largest logits
      for (int k = 0; k < 300; ++k) {
        const int32_t t = int32_t(rng() % uint32_t(V));
        masks.row(r)[t >> 5] |= 1u << (t & 31);
      }
      masks.set_has(r, true);
    }
    if (r % 3 == 1)
      p.logit_bias = std::make_shared<const std::vector<std::pair<int32_t, float>>>(
          std::vector<std::pair<int32_t, float>>{{int32_t(r * 97), 9.f}, {7, -5.f}, {int32_t(V - 1), 3.5f}});
    if (r % 6 == 4) {
      p.repetition_penalty = 1.3f;
      p.frequency_penalty = 0.4f;
      pens[size_t(r)] = &history;
    }
  }
  auto logits = randn(size_t(rows) * V, 96, 2.f);
  for (int r = 0; r < rows; ++r)
    for (int j = 0; j < 30; ++j) logits[size_t(r) * V + (size_t(j) * 7919 + size_t(r) * 13) % V] += 8.f;
  SamplingRows prep = prepare_sampling_rows(ps, pens);
  for (int r = 0; r < rows; ++r) prep.rows[size_t(r)].masked = masks.has(r) ? 1 : 0;
  const GpuSamples g = run_gpu_sampling(logits, rows, V, prep, &masks);
  const auto& gt = g.tokens;
  const auto& gl = g.logprobs;
  auto ref = sample_cpu(logits.data(), rows, V, ps, pens, &masks);
  for (int r = 0; r < rows; ++r) {
    EXPECT_EQ(gt[size_t(r)], ref[size_t(r)].token) << "row " << r;
    EXPECT_NEAR(gl[size_t(r)], ref[size_t(r)].logprob, 1e-4) << "row " << r;
    if (masks.has(r)) {
      EXPECT_TRUE(StepMasks::allowed(masks.row(r), gt[size_t(r)])) << "row " << r;
    }
  }
}

TEST(GpuOps, SamplingWithMasksAndBiasMatchesCpuSampler) {
  DS_REQUIRE_GPU();
  with_switch_off_and_on(g_radix, "sampling_radix", SamplingWithMasksAndBiasMatchesCpuSamplerBody);
}

// Scoring rows (SampleParams::forced_token, prompt logprobs) beside sampled ones: the GPU reports the given
// token with the CPU sampler's logprob and top alternatives of the raw logits; the sampled rows are unchanged.
void SamplingScoringRowsMatchCpuSamplerBody() {
  const int V = 163840, rows = 12;
  std::vector<SampleParams> ps(static_cast<size_t>(rows));
  for (int r = 0; r < rows; ++r) {
    SampleParams& p = ps[size_t(r)];
    p.temperature = r % 2 ? 0.f : 0.7f;
    p.seed = 900 + uint64_t(r);
    p.num_logprobs = r % 3;
    if (r % 3 != 2) {  // scoring: greedy, a token that is not the argmax
      p.temperature = 0.f;
      p.forced_token = int32_t((uint32_t(r) * 40503u) % uint32_t(V));
    }
  }
  auto logits = randn(size_t(rows) * V, 97, 2.f);
  const SamplingRows prep = prepare_sampling_rows(ps, {});
  const GpuSamples g = run_gpu_sampling(logits, rows, V, prep);
  const auto ref = sample_cpu(logits.data(), rows, V, ps, {});
  const int max_lp = prep.max_logprobs;
  for (int r = 0; r < rows; ++r) {
    if (ps[size_t(r)].forced_token >= 0) {
      EXPECT_EQ(g.tokens[size_t(r)], ps[size_t(r)].forced_token) << "row " << r;
    }
    EXPECT_EQ(g.tokens[size_t(r)], ref[size_t(r)].token) << "row " << r;
    EXPECT_NEAR(g.logprobs[size_t(r)], ref[size_t(r)].logprob, 1e-4) << "row " << r;
    EXPECT_EQ(g.ranks[size_t(r)], ref[size_t(r)].rank) << "row " << r;  // forced tokens far down the order
    EXPECT_GT(ref[size_t(r)].rank, ps[size_t(r)].forced_token >= 0 ? 1 : 0) << "row " << r;
    for (size_t i = 0; i < ref[size_t(r)].top_logprobs.size(); ++i) {
      EXPECT_EQ(g.top_ids[size_t(r) * max_lp + i], ref[size_t(r)].top_logprobs[i].first) << "row " << r;
      EXPECT_NEAR(g.top_logprobs[size_t(r) * max_lp + i], ref[size_t(r)].top_logprobs[i].second, 1e-4);
    }
  }
  SampleParams bad;  // a scoring row must be greedy, without penalties or bias
  bad.forced_token = 3;
  bad.temperature = 0.5f;
  EXPECT_THROW(prepare_sampling_rows({bad}, {}), Error);
}

TEST(GpuOps, SamplingScoringRowsMatchCpuSampler) {
  DS_REQUIRE_GPU();
  with_switch_off_and_on(g_radix, "sampling_radix", SamplingScoringRowsMatchCpuSamplerBody);
}

// The sampler's launches: rows whose penalty lists together exceed the planned staging are split
// into consecutive groups, each within it; one group when all fit.
TEST(GpuOps, SamplingGroupsStayWithinTheStaging) {
  std::vector<SampleParams> ps(4);
  std::vector<SeqPenalties> seqs;
  for (int n : {3, 4, 2, 5}) {  // distinct tokens per row
    std::vector<int32_t> prompt;
    for (int t = 0; t < n; ++t) prompt.push_back(t);
    seqs.emplace_back(prompt, std::vector<int32_t>{}, 100);
  }
  std::vector<const SeqPenalties*> pens;
  for (size_t r = 0; r < ps.size(); ++r) {
    ps[r].repetition_penalty = 1.1f;
    pens.push_back(&seqs[r]);
  }
  const SamplingRows prep = prepare_sampling_rows(ps, pens);
  ASSERT_EQ(prep.pen_tokens.size(), 14u);
  using Groups = std::vector<std::pair<int, int>>;
  EXPECT_EQ(sampling_groups(prep, 14), (Groups{{0, 4}}));
  EXPECT_EQ(sampling_groups(prep, 7), (Groups{{0, 2}, {2, 4}}));
  EXPECT_EQ(sampling_groups(prep, 5), (Groups{{0, 1}, {1, 2}, {2, 3}, {3, 4}}));
  EXPECT_EQ(sampling_groups(prep, 4), (Groups{{0, 1}, {1, 2}, {2, 3}, {3, 4}}));  // row 3 alone: refused later
}

}  // namespace
}  // namespace ds::gpu::test
