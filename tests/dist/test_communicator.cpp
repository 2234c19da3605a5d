// The in-process communicator: every collective with several rank threads, many times over, gives
// exact, identical results on every rank whatever the thread timing; mismatched sizes and abort are
// errors on every waiting rank. And the step message the ranks receive round-trips.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "dist/batch_codec.h"
#include "dist/in_process.h"

namespace ds {
namespace {

// Runs fn(rank) on `n` threads of one group; returns each rank's error ("" : none).
std::vector<std::string> run_ranks(InProcessGroup& g, const std::function<void(Communicator&)>& fn) {
  std::vector<std::string> errors(static_cast<size_t>(g.size()));
  std::vector<std::thread> ts;
  for (int r = 0; r < g.size(); ++r)
    ts.emplace_back([&, r] {
      try {
        fn(g.comm(r));
      } catch (const Error& e) {
        errors[size_t(r)] = e.what();
      }
    });
  for (auto& t : ts) t.join();
  return errors;
}

// A value no two (rank, round, index) share, and whose float sums are not exact in every order.
float value(int rank, int round, size_t i) { return 0.1f * float(rank + 1) + 1e-3f * float((round * 7 + int(i)) % 97); }

TEST(InProcessComm, AllReduceIsExactDeterministicAndTheSameOnEveryRank) {
  for (int n : {1, 2, 3, 4, 8}) {
    InProcessGroup g(n);
    constexpr int kRounds = 200;
    std::vector<std::vector<float>> last(static_cast<size_t>(n));
    auto errors = run_ranks(g, [&](Communicator& c) {
      EXPECT_EQ(c.size(), n);
      for (int round = 0; round < kRounds; ++round) {
        const size_t len = size_t(1 + (round * 13) % 37);  // lengths that do not divide by n too
        std::vector<float> v(len);
        for (size_t i = 0; i < len; ++i) v[i] = value(c.rank(), round, i);
        c.all_reduce_sum(v);
        for (size_t i = 0; i < len; ++i) {
          float want = 0.0f;  // the documented order: ranks 0, 1, ..., n-1
          for (int r = 0; r < n; ++r) want += value(r, round, i);
          ASSERT_EQ(std::memcmp(&v[i], &want, sizeof(float)), 0) << "n " << n << " round " << round << " i " << i;
        }
        if (round == kRounds - 1) last[size_t(c.rank())] = v;
      }
    });
    for (const auto& e : errors) EXPECT_EQ(e, "");
    for (int r = 1; r < n; ++r) EXPECT_EQ(last[size_t(r)], last[0]);
  }
}

TEST(InProcessComm, AllGatherBroadcastAndBarrierRepeated) {
  constexpr int n = 4;
  InProcessGroup g(n);
  std::atomic<int> arrived{0};
  auto errors = run_ranks(g, [&](Communicator& c) {
    for (int round = 0; round < 300; ++round) {
      const size_t len = size_t(round % 5);  // empty pieces too
      std::vector<float> in(len), out(len * n);
      for (size_t i = 0; i < len; ++i) in[i] = value(c.rank(), round, i);
      c.all_gather(in, out);
      for (int r = 0; r < n; ++r)
        for (size_t i = 0; i < len; ++i) ASSERT_EQ(out[size_t(r) * len + i], value(r, round, i));
      const int root = round % n;
      std::vector<uint8_t> bytes;
      if (c.rank() == root) bytes.assign(size_t(round % 11), uint8_t(round));
      broadcast_bytes(c, bytes, root);
      ASSERT_EQ(bytes, std::vector<uint8_t>(size_t(round % 11), uint8_t(round)));
      arrived.fetch_add(1);
      c.barrier();
      ASSERT_GE(arrived.load(), (round + 1) * n);  // nobody passes the barrier before everyone reached it
      c.barrier();
    }
  });
  for (const auto& e : errors) EXPECT_EQ(e, "");
}

TEST(InProcessComm, MismatchedSizesAndAbortAreErrorsOnEveryRank) {
  {
    InProcessGroup g(3);
    auto errors = run_ranks(g, [&](Communicator& c) {
      std::vector<float> v(size_t(c.rank() == 2 ? 5 : 4), 1.0f);
      c.all_reduce_sum(v);
    });
    for (const auto& e : errors) EXPECT_NE(e.find("all_reduce_sum: rank 2 gave 5 elements, rank 0 4"), std::string::npos) << e;
  }
  {
    InProcessGroup g(3);
    auto errors = run_ranks(g, [&](Communicator& c) {
      if (c.rank() == 1) {
        g.abort("rank 1 gave up");
        return;
      }
      std::vector<float> v(4, 1.0f);
      c.all_reduce_sum(v);  // waits for rank 1, which never comes
    });
    EXPECT_NE(errors[0].find("communicator aborted: rank 1 gave up"), std::string::npos) << errors[0];
    EXPECT_EQ(errors[1], "");
    EXPECT_NE(errors[2].find("communicator aborted"), std::string::npos) << errors[2];
    EXPECT_TRUE(g.aborted());
    EXPECT_THROW(g.comm(0).barrier(), Error);  // and every later collective
  }
}

TEST(RankMessage, StepBatchRoundTripsAndBadBytesAreErrors) {
  RankMessage m;
  ForwardBatch& b = m.batch;
  b.add(3, 0, {1, 2, 3}, {7, 8}).save_snapshot = 2;
  SeqSlice& s = b.add(5, 40, {9}, {1, 2, 4}, /*logits_all=*/true);
  s.state_init = StateInit::RestoreSnapshot;
  s.state_src = 1;
  s.tail_src_block = 6;
  s.tail_rows = 8;
  s.need_logits = false;
  b.saves_before.push_back({4, 0});
  const std::vector<uint8_t> bytes = encode_rank_message(m);
  const RankMessage d = decode_rank_message(bytes);
  EXPECT_EQ(d.command, RankCommand::Step);
  EXPECT_EQ(d.batch.tokens, b.tokens);
  ASSERT_EQ(d.batch.seqs.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    const SeqSlice &x = d.batch.seqs[i], &y = b.seqs[i];
    EXPECT_EQ(x.state_slot, y.state_slot);
    EXPECT_EQ(x.context_len, y.context_len);
    EXPECT_EQ(x.state_init, y.state_init);
    EXPECT_EQ(x.state_src, y.state_src);
    EXPECT_EQ(x.save_snapshot, y.save_snapshot);
    EXPECT_EQ(x.tail_src_block, y.tail_src_block);
    EXPECT_EQ(x.tail_rows, y.tail_rows);
    EXPECT_EQ(x.num_tokens, y.num_tokens);
    EXPECT_EQ(x.token_offset, y.token_offset);
    EXPECT_EQ(x.block_table, y.block_table);
    EXPECT_EQ(x.logits_all, y.logits_all);
    EXPECT_EQ(x.need_logits, y.need_logits);
  }
  ASSERT_EQ(d.batch.saves_before.size(), 1u);
  EXPECT_EQ(d.batch.saves_before[0].slot, 4);
  RankMessage stop;
  stop.command = RankCommand::Stop;
  EXPECT_EQ(decode_rank_message(encode_rank_message(stop)).command, RankCommand::Stop);
  // Every truncation is an error, never a read past the end.
  for (size_t n = 0; n < bytes.size(); ++n)
    EXPECT_THROW(decode_rank_message(std::vector<uint8_t>(bytes.begin(), bytes.begin() + long(n))), Error) << n;
  std::vector<uint8_t> extra = bytes;
  extra.push_back(0);
  EXPECT_THROW(decode_rank_message(extra), Error);
}

}  // namespace
}  // namespace ds
