// The incremental penalty history (sampling/penalties.h) that both backends keep per sequence.
#include <gtest/gtest.h>

#include "core/error.h"
#include "sampling/cpu_sampler.h"
#include "sampling/penalties.h"

namespace ds {
namespace {

SeqSampling row(uint64_t id, float repetition = 1.3f) {
  SeqSampling r;
  r.seq_id = id;
  r.params.temperature = 0.0f;
  r.params.repetition_penalty = repetition;
  return r;
}

TEST(SeqPenalties, DistinctTokensWithOutputCounts) {
  SeqPenalties p({5, 7, 7, 9, 100}, {7, 11, 11, -1}, 50);  // 100 and -1 are outside the vocabulary
  EXPECT_EQ(p.tokens(), (std::vector<int32_t>{5, 7, 9, 11}));
  EXPECT_EQ(p.output_counts(), (std::vector<int32_t>{0, 1, 0, 2}));
  p.add_output(5);
  p.add_output(12);
  EXPECT_EQ(p.tokens(), (std::vector<int32_t>{5, 7, 9, 11, 12}));
  EXPECT_EQ(p.output_counts(), (std::vector<int32_t>{1, 1, 0, 2, 1}));
  // Built incrementally or at once: the same state.
  const SeqPenalties q({5, 7, 7, 9}, {7, 11, 11, 5, 12}, 50);
  EXPECT_EQ(q.tokens(), p.tokens());
  EXPECT_EQ(q.output_counts(), p.output_counts());
}

TEST(PenaltyTracker, HistoryOnceThenAppendedUntilReleased) {
  PenaltyTracker t(50);
  SeqSampling a = row(1);
  EXPECT_THROW(t.prepare({a}), Error) << "penalties without a history";
  a.history = true;
  a.prompt = {3, 4};
  a.output = {4};
  auto pens = t.prepare({a, row(2, 1.0f)});
  ASSERT_EQ(pens.size(), 2u);
  ASSERT_NE(pens[0], nullptr);
  EXPECT_EQ(pens[1], nullptr) << "no penalties: no state";
  EXPECT_EQ(pens[0]->tokens(), (std::vector<int32_t>{3, 4}));
  SampleResult s;
  s.token = 8;
  t.record({a, row(2, 1.0f)}, {s, s});
  EXPECT_EQ(t.num_tracked(), 1u);
  pens = t.prepare({row(1)});  // later steps: no history, the state grew by the sampled token
  EXPECT_EQ(pens[0]->tokens(), (std::vector<int32_t>{3, 4, 8}));
  EXPECT_EQ(pens[0]->output_counts(), (std::vector<int32_t>{0, 1, 1}));
  t.release({1, 99});
  EXPECT_EQ(t.num_tracked(), 0u);
  EXPECT_THROW(t.prepare({row(1)}), Error);
}

// The CPU sampler reads the tracked state: a repetition penalty on the history changes the choice.
TEST(PenaltyTracker, SamplerAppliesTheTrackedHistory) {
  const std::vector<float> logits{1.0f, 2.0f, 1.9f};
  PenaltyTracker t(3);
  SeqSampling a = row(1, 2.0f);
  a.history = true;
  a.prompt = {1};
  const auto pens = t.prepare({a});
  EXPECT_EQ(sample_cpu(logits.data(), 1, 3, {a.params}, pens)[0].token, 2);  // 2.0 / 2 < 1.9
  EXPECT_EQ(sample_cpu(logits.data(), 1, 3, {a.params})[0].token, 1);        // without the history
}

}  // namespace
}  // namespace ds
