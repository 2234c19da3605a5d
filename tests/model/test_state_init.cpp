// SeqSlice::state_init and save_snapshot on the CPU backend: a KDA state copied from another slot or
// restored from a snapshot continues exactly (bit for bit) like the sequence that computed it.
#include <gtest/gtest.h>

#include "model_test_util.h"

namespace ds::test {
namespace {

constexpr int kPrefix = 64;  // 4 full pages of 16: shared pages hold the prefix exactly

std::vector<float> run(CpuBackend& b, const ForwardBatch& batch) { return forward_logits(b, batch); }

std::vector<int32_t> concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

struct Inputs {
  std::vector<int32_t> prefix, next, other;
};

Inputs inputs() {
  const auto ids = reference().i32("len150.ids");
  Inputs in;
  in.prefix.assign(ids.begin(), ids.begin() + kPrefix);
  in.next.assign(ids.begin() + kPrefix, ids.begin() + kPrefix + 30);
  in.other.assign(ids.begin() + 100, ids.begin() + 120);
  return in;
}

// The reference: `prefix` then `next` (all logits) and one decode, computed in slot 2 on pages 100...
std::vector<float> recomputed(CpuBackend& b, const Inputs& in) {
  const auto table = concat(pages(100, 4), pages(110, 3));
  ForwardBatch first;
  first.add(2, 0, in.prefix, table);
  run(b, first);
  ForwardBatch second;
  second.add(2, kPrefix, in.next, table, true);
  auto out = run(b, second);
  ForwardBatch decode;
  decode.add(2, kPrefix + int64_t(in.next.size()), {in.next[0]}, table);
  const auto d = run(b, decode);
  out.insert(out.end(), d.begin(), d.end());
  return out;
}

// `next` (all logits) and one decode in `slot`, whose state is initialised by `init` from `src`.
std::vector<float> continued(CpuBackend& b, const Inputs& in, int slot, StateInit init, int src,
                             const std::vector<int32_t>& table) {
  ForwardBatch second;
  auto& s = second.add(slot, kPrefix, in.next, table, true);
  s.state_init = init;
  s.state_src = src;
  auto out = run(b, second);
  ForwardBatch decode;
  decode.add(slot, kPrefix + int64_t(in.next.size()), {in.next[0]}, table);
  const auto d = run(b, decode);
  out.insert(out.end(), d.begin(), d.end());
  return out;
}

TEST(StateInit, CopiedSlotContinuesLikeRecomputation) {
  auto b = tiny_backend(4);
  const Inputs in = inputs();
  const auto ref = recomputed(*b, in);
  ForwardBatch first;
  first.add(0, 0, in.prefix, pages(0, 4));
  run(*b, first);
  // Slot 1 shares the prefix's pages and copies slot 0's state.
  const auto got = continued(*b, in, 1, StateInit::CopySlot, 0, concat(pages(0, 4), pages(10, 3)));
  ASSERT_EQ(got.size(), ref.size());
  EXPECT_EQ(got, ref);
  // The source was not disturbed: slot 0 continues the same way.
  EXPECT_EQ(continued(*b, in, 0, StateInit::Keep, -1, concat(pages(0, 4), pages(20, 3))), ref);
}

TEST(StateInit, RestoredSnapshotContinuesLikeRecomputation) {
  auto opts = tiny_options(4);
  opts.num_snapshots = 2;
  CpuBackend b(opts);
  EXPECT_EQ(b.limits().num_snapshots, 2);
  const Inputs in = inputs();
  const auto ref = recomputed(b, in);
  ForwardBatch first;
  first.add(0, 0, in.prefix, pages(0, 4)).save_snapshot = 1;
  run(b, first);
  // Slot 0 moves on with other tokens, so its state no longer is the prefix's.
  ForwardBatch other;
  other.add(0, kPrefix, in.other, concat(pages(0, 4), pages(4, 2)));
  run(b, other);
  const auto moved_on = continued(b, in, 0, StateInit::Keep, -1, concat(pages(0, 4), pages(30, 3)));
  EXPECT_NE(moved_on, ref);
  // Rewinding slot 0 to the snapshot, and restoring it into another slot, both reproduce the reference.
  EXPECT_EQ(continued(b, in, 0, StateInit::RestoreSnapshot, 1, concat(pages(0, 4), pages(40, 3))), ref);
  EXPECT_EQ(continued(b, in, 3, StateInit::RestoreSnapshot, 1, concat(pages(0, 4), pages(50, 3))), ref);
}

TEST(StateInit, ZeroResetsAReusedSlot) {
  auto b = tiny_backend(4);
  ForwardBatch dirty;
  dirty.add(0, 0, reference().i32("len150.ids"), pages(0, 12));
  run(*b, dirty);
  ForwardBatch batch;
  auto& s = batch.add(0, 0, reference().i32("len65.ids"), pages(0, 12), true);
  ASSERT_EQ(s.state_init, StateInit::Zero);  // what add() and the scheduler give a fresh sequence
  EXPECT_LT(rel_l2(run(*b, batch), reference().f32("len65.logits")), 1e-5);
}

TEST(StateInit, InconsistentStateOperationsAreRejected) {
  auto opts = tiny_options(4);
  opts.num_snapshots = 1;
  CpuBackend b(opts);
  auto expect_error = [&](const ForwardBatch& batch, const std::string& what) {
    try {
      forward_logits(b, batch);
      ADD_FAILURE() << "no error for " << what;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  {
    ForwardBatch keep_fresh;
    keep_fresh.add(0, 0, {1, 2}, pages(0, 1)).state_init = StateInit::Keep;
    expect_error(keep_fresh, "state_init is Keep");
  }
  {
    ForwardBatch zero_late;
    zero_late.add(0, 5, {1, 2}, pages(0, 1)).state_init = StateInit::Zero;
    expect_error(zero_late, "zeroed state");
  }
  {
    ForwardBatch copy_self;
    auto& s = copy_self.add(1, 16, {1, 2}, pages(0, 2));
    s.state_init = StateInit::CopySlot;
    s.state_src = 1;
    expect_error(copy_self, "copies its state from slot 1");
  }
  {
    ForwardBatch copy_initialised;
    copy_initialised.add(0, 0, {1, 2}, pages(0, 1));
    auto& s = copy_initialised.add(1, 16, {1, 2}, pages(0, 2));
    s.state_init = StateInit::CopySlot;
    s.state_src = 0;
    expect_error(copy_initialised, "initialises itself");
  }
  {
    ForwardBatch restore_missing;
    auto& s = restore_missing.add(0, 16, {1, 2}, pages(0, 2));
    s.state_init = StateInit::RestoreSnapshot;
    s.state_src = 1;
    expect_error(restore_missing, "restores snapshot 1");
  }
  {
    ForwardBatch save_twice;
    save_twice.add(0, 0, {1, 2}, pages(0, 1)).save_snapshot = 0;
    save_twice.add(1, 0, {1, 2}, pages(1, 1)).save_snapshot = 0;
    expect_error(save_twice, "saved twice");
  }
  {
    ForwardBatch save_missing;
    save_missing.add(0, 0, {1, 2}, pages(0, 1)).save_snapshot = 3;
    expect_error(save_missing, "saves snapshot 3");
  }
}

TEST(StateInit, NoSnapshotsByDefault) {
  auto b = tiny_backend(2);
  EXPECT_EQ(b->limits().num_snapshots, 0);
  EXPECT_EQ(b->kda_states().num_snapshots(), 0);
  EXPECT_EQ(b->kda_states().snapshot_bytes(), 0u);
}

}  // namespace
}  // namespace ds::test
