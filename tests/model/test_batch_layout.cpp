// The layout of a ForwardBatch for a one-pass device (model/batch_layout.h; what the CUDA backend runs):
// ordering, logits-row mapping, state operations, graph padding, the token limit (never a split), and
// the errors for inconsistent batches. Pure host code.
#include <gtest/gtest.h>

#include "core/error.h"
#include "model/batch_layout.h"

namespace ds {
namespace {

LayoutLimits limits(int max_tokens = 8192) {
  LayoutLimits l;
  l.vocab = 100;
  l.num_slots = 8;
  l.num_snapshots = 2;
  l.num_blocks = 64;
  l.block_size = 4;
  l.max_tokens = max_tokens;
  return l;
}

TEST(BatchLayout, DecodesFirstAndLogitRowsInBatchOrder) {
  ForwardBatch b;
  b.add(3, 0, {1, 2, 3, 4, 5}, {10, 11});          // prefill, last row only
  b.add(1, 6, {7}, {20, 21});                       // decode at position 6
  b.add(5, 2, {8, 9}, {30}, /*logits_all=*/true);   // prefill continuing, all rows
  const BatchLayout p = layout_batch(b, limits());
  EXPECT_EQ(p.num_decode, 1);
  EXPECT_EQ(p.num_seqs, 3);
  EXPECT_EQ(p.num_tokens, 8);
  EXPECT_EQ(p.tokens, (std::vector<int32_t>{7, 1, 2, 3, 4, 5, 8, 9}));
  EXPECT_EQ(p.cu_seqlens, (std::vector<int32_t>{0, 1, 6, 8}));
  EXPECT_EQ(p.slots, (std::vector<int32_t>{1, 3, 5}));
  EXPECT_EQ(p.seq_lens, (std::vector<int32_t>{7, 5, 4}));
  EXPECT_EQ(p.token_pos, (std::vector<int32_t>{6, 0, 1, 2, 3, 4, 2, 3}));
  EXPECT_EQ(p.token_seq, (std::vector<int32_t>{0, 1, 1, 1, 1, 1, 2, 2}));
  // position 6 of the decode sits in page 21 (6 / 4 = 1), row 2
  EXPECT_EQ(p.slot_mapping[0], 21 * 4 + 2);
  EXPECT_EQ(p.slot_mapping[5], 11 * 4 + 0);  // position 4 of the first prefill
  // rows: seq 0's last token, seq 1's token, seq 2's two tokens
  EXPECT_EQ(p.logit_rows, (std::vector<int32_t>{5, 0, 6, 7}));
  EXPECT_EQ(p.num_rows(), b.num_logit_rows());
  EXPECT_EQ(p.zero_slots, (std::vector<int32_t>{3}));
  EXPECT_EQ(p.fresh, (std::vector<uint8_t>{0, 1, 0}));
  EXPECT_EQ(p.bt_stride, 2);
  EXPECT_EQ(p.block_tables, (std::vector<int32_t>{20, 21, 10, 11, 30, 0}));
  // the prefills alone: query offsets from token num_decode, keys over [0, ctx + n)
  EXPECT_EQ(p.pre_cu_q, (std::vector<int32_t>{0, 5, 7}));
  EXPECT_EQ(p.pre_cu_k, (std::vector<int32_t>{0, 5, 9}));
  EXPECT_EQ(p.max_q_len, 5);
  EXPECT_EQ(p.max_seq_len, 7);
}

TEST(BatchLayout, StateOperationsFromStateInit) {
  ForwardBatch b;
  b.add(0, 0, {1, 2}, {0});                      // Zero (add() for context 0)
  auto& copy = b.add(1, 4, {3}, {0, 1});         // copies slot 6's state (a shared 4-token prefix)
  copy.state_init = StateInit::CopySlot;
  copy.state_src = 6;
  auto& restore = b.add(2, 4, {4, 5}, {0, 2});   // restores snapshot 1
  restore.state_init = StateInit::RestoreSnapshot;
  restore.state_src = 1;
  restore.save_snapshot = 0;                     // and saves its state after the step
  b.add(3, 9, {6}, {3, 4, 5});                   // Keep
  const BatchLayout p = layout_batch(b, limits());
  EXPECT_EQ(p.zero_slots, (std::vector<int32_t>{0}));
  EXPECT_EQ(p.copy_slots, (std::vector<int32_t>{6, 1}));
  EXPECT_EQ(p.restore_slots, (std::vector<int32_t>{1, 2}));
  EXPECT_EQ(p.save_snapshots, (std::vector<int32_t>{2, 0}));
  // layout order: decodes (slots 1, 3) then prefills (slots 0, 2); only the zeroed one is fresh
  EXPECT_EQ(p.slots, (std::vector<int32_t>{1, 3, 0, 2}));
  EXPECT_EQ(p.fresh, (std::vector<uint8_t>{0, 0, 1, 0}));
}

TEST(BatchLayout, OverTheTokenLimitIsAnErrorNeverASplit) {
  ForwardBatch b;
  b.add(0, 0, std::vector<int32_t>(10, 4), {0, 1, 2}, true);
  b.add(1, 0, {5, 6}, {3});
  EXPECT_EQ(layout_batch(b, limits(12)).num_tokens, 12);
  try {
    layout_batch(b, limits(11));
    ADD_FAILURE() << "a 12-token batch was laid out under an 11-token limit";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("limit of 11 tokens"), std::string::npos) << e.what();
  }
  EXPECT_EQ(layout_batch(b, limits(0)).num_tokens, 12);  // 0: no limit
}

TEST(BatchLayout, PadsDecodeBatchesForGraphs) {
  ForwardBatch b;
  b.add(2, 3, {9}, {5});
  b.add(0, 8, {9}, {6, 7, 8});
  auto p = layout_batch(b, limits());
  pad_decode_layout(p, 4, 8, /*pad_slot=*/8, /*pad_block=*/64, 4);
  EXPECT_EQ(p.num_seqs, 4);
  EXPECT_EQ(p.num_tokens, 4);
  EXPECT_EQ(p.slots, (std::vector<int32_t>{2, 0, 8, 8}));
  EXPECT_EQ(p.block_tables.size(), 32u);
  EXPECT_EQ(p.block_tables[8], 6);   // row 1 keeps its pages
  EXPECT_EQ(p.block_tables[16], 64); // padding rows point at the scratch page
  EXPECT_EQ(p.slot_mapping[3], 64 * 4);
  EXPECT_EQ(p.cu_seqlens, (std::vector<int32_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(p.fresh, (std::vector<uint8_t>{0, 0, 2, 2}));  // padding rows: 2
  EXPECT_TRUE(p.zero_slots.empty());  // the scratch slot is never zeroed: padding rows do not read it
  ForwardBatch prefill;
  prefill.add(0, 0, {1, 2}, {0});
  auto q = layout_batch(prefill, limits());
  EXPECT_THROW(pad_decode_layout(q, 4, 8, 8, 64, 4), Error);
}

TEST(BatchLayout, RejectsInconsistentBatches) {
  auto expect_error = [](const ForwardBatch& b, const std::string& what) {
    try {
      layout_batch(b, limits());
      ADD_FAILURE() << "no error for " << what;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  expect_error(ForwardBatch{}, "empty batch");
  ForwardBatch b1;
  b1.add(9, 0, {1}, {0});
  expect_error(b1, "state slot 9 outside");
  ForwardBatch b2;
  b2.add(0, 0, {1}, {0});
  b2.add(0, 0, {1}, {1});
  expect_error(b2, "used twice");
  ForwardBatch b3;
  b3.add(0, 0, {100}, {0});
  expect_error(b3, "token id 100");
  ForwardBatch b4;
  b4.add(0, 4, {1}, {0});
  expect_error(b4, "block table has 1 pages, 2 needed");
  ForwardBatch b5;
  b5.add(0, 0, {1}, {64});
  expect_error(b5, "page 64 outside");
  ForwardBatch b6;
  b6.add(0, 0, {1}, {0}).state_init = StateInit::Keep;
  expect_error(b6, "state_init is Keep");
  ForwardBatch b7;
  auto& r = b7.add(0, 4, {1}, {0, 1});
  r.state_init = StateInit::RestoreSnapshot;
  r.state_src = 2;
  expect_error(b7, "restores snapshot 2");
  ForwardBatch b8;
  b8.add(0, 0, {1, 2}, {0});
  b8.seqs[0].token_offset = 1;
  expect_error(b8, "token_offset 1");
}

}  // namespace
}  // namespace ds
