// The host-side planning of a GPU forward (no device needed): ordering, splitting of long batches,
// logits-row mapping, graph padding, and the errors for inconsistent batches.
#include <gtest/gtest.h>

#include "core/error.h"
#include "cuda/step_plan.h"

namespace ds::gpu {
namespace {

PlanLimits limits(int max_tokens = 8192) {
  PlanLimits l;
  l.vocab = 100;
  l.num_slots = 8;
  l.num_blocks = 64;
  l.block_size = 4;
  l.max_tokens = max_tokens;
  return l;
}

TEST(StepPlan, DecodesFirstAndLogitRowsInBatchOrder) {
  ForwardBatch b;
  b.add(3, 0, {1, 2, 3, 4, 5}, {10, 11});          // prefill, last row only
  b.add(1, 6, {7}, {20, 21});                       // decode at position 6
  b.add(5, 2, {8, 9}, {30}, /*logits_all=*/true);   // prefill continuing, all rows
  auto plans = plan_forward(b, limits());
  ASSERT_EQ(plans.size(), 1u);
  const auto& p = plans[0];
  EXPECT_EQ(p.num_decode, 1);
  EXPECT_EQ(p.num_seqs, 3);
  EXPECT_EQ(p.tokens, (std::vector<int32_t>{7, 1, 2, 3, 4, 5, 8, 9}));
  EXPECT_EQ(p.cu_seqlens, (std::vector<int32_t>{0, 1, 6, 8}));
  EXPECT_EQ(p.slots, (std::vector<int32_t>{1, 3, 5}));
  EXPECT_EQ(p.seq_lens, (std::vector<int32_t>{7, 5, 4}));
  EXPECT_EQ(p.token_pos, (std::vector<int32_t>{6, 0, 1, 2, 3, 4, 2, 3}));
  // position 6 of the decode sits in page 21 (6 / 4 = 1), row 2
  EXPECT_EQ(p.slot_mapping[0], 21 * 4 + 2);
  EXPECT_EQ(p.slot_mapping[5], 11 * 4 + 0);  // position 4 of the first prefill
  // rows: seq 0's last token, seq 1's token, seq 2's two tokens
  EXPECT_EQ(p.logit_rows, (std::vector<int32_t>{5, 0, 6, 7}));
  EXPECT_EQ(p.fresh_slots, (std::vector<int32_t>{3}));
  EXPECT_EQ(p.bt_stride, 2);
}

TEST(StepPlan, SplitsLongBatchesCarryingState) {
  ForwardBatch b;
  std::vector<int32_t> ids(10, 4);
  b.add(0, 0, ids, {0, 1, 2}, true);
  b.add(1, 0, {5, 6}, {3});
  auto plans = plan_forward(b, limits(4));
  ASSERT_EQ(plans.size(), 3u);
  EXPECT_EQ(plans[0].num_tokens, 4);
  EXPECT_EQ(plans[1].num_tokens, 4);
  EXPECT_EQ(plans[2].num_tokens, 4);  // the last 2 of seq 0 and seq 1's 2
  EXPECT_EQ(plans[1].token_pos.front(), 4);
  EXPECT_TRUE(plans[1].fresh_slots.empty());  // continuing: not zeroed
  EXPECT_EQ(plans[0].logits_row0, 0);
  EXPECT_EQ(plans[1].logits_row0, 4);
  EXPECT_EQ(plans[2].logits_row0, 8);
  EXPECT_EQ(plans[2].num_rows(), 3);  // 2 of seq 0, 1 of seq 1
  int total = 0;
  for (const auto& p : plans) total += p.num_rows();
  EXPECT_EQ(total, b.num_logit_rows());
}

TEST(StepPlan, PadsDecodeBatchesForGraphs) {
  ForwardBatch b;
  b.add(2, 3, {9}, {5});
  b.add(0, 8, {9}, {6, 7, 8});
  auto plans = plan_forward(b, limits());
  auto p = plans[0];
  pad_decode_plan(p, 4, 8, /*pad_slot=*/8, /*pad_block=*/64, 4);
  EXPECT_EQ(p.num_seqs, 4);
  EXPECT_EQ(p.slots, (std::vector<int32_t>{2, 0, 8, 8}));
  EXPECT_EQ(p.block_tables.size(), 32u);
  EXPECT_EQ(p.block_tables[8], 6);   // row 1 keeps its pages
  EXPECT_EQ(p.block_tables[16], 64); // padding rows point at the scratch page
  EXPECT_EQ(p.slot_mapping[3], 64 * 4);
  EXPECT_EQ(p.cu_seqlens, (std::vector<int32_t>{0, 1, 2, 3, 4}));
}

TEST(StepPlan, RejectsInconsistentBatches) {
  auto expect_error = [](ForwardBatch b, const char* what) {
    try {
      plan_forward(b, limits());
      ADD_FAILURE() << "no error for " << what;
    } catch (const Error& e) {
      SUCCEED() << e.what();
    }
  };
  ForwardBatch b1;
  b1.add(9, 0, {1}, {0});
  expect_error(b1, "slot out of range");
  ForwardBatch b2;
  b2.add(0, 0, {1}, {0});
  b2.add(0, 0, {1}, {1});
  expect_error(b2, "duplicate slot");
  ForwardBatch b3;
  b3.add(0, 0, {100}, {0});
  expect_error(b3, "token id out of range");
  ForwardBatch b4;
  b4.add(0, 4, {1}, {0});
  expect_error(b4, "block table too short");
  ForwardBatch b5;
  b5.add(0, 0, {1}, {64});
  expect_error(b5, "page out of range");
}

}  // namespace
}  // namespace ds::gpu
