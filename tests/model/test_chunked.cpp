// Chunked prefill, decode, batching and the alternative numerical paths on the tiny checkpoint.
#include <gtest/gtest.h>

#include <algorithm>

#include "model_test_util.h"

namespace ds::test {
namespace {

constexpr double kTol = 1e-5;
constexpr int kVocab = 2048;

// Prompt in chunks of `chunk` tokens (logits for every position), then one decode step per token of
// `continuation`; returns logits rows for prompt + continuation.
std::vector<float> chunked_run(CpuBackend& b, int slot, const std::vector<int32_t>& prompt,
                               const std::vector<int32_t>& continuation, int chunk,
                               const std::vector<int32_t>& table) {
  std::vector<float> all, logits;
  int64_t ctx = 0;
  for (size_t s = 0; s < prompt.size(); s += size_t(chunk)) {
    std::vector<int32_t> ids(prompt.begin() + s, prompt.begin() + std::min(prompt.size(), s + chunk));
    ForwardBatch batch;
    batch.add(slot, ctx, ids, table, /*logits_all=*/true);
    logits = forward_logits(b, batch);
    all.insert(all.end(), logits.begin(), logits.end());
    ctx += int64_t(ids.size());
  }
  for (int32_t tok : continuation) {
    ForwardBatch batch;
    batch.add(slot, ctx++, {tok}, table);
    logits = forward_logits(b, batch);
    all.insert(all.end(), logits.begin(), logits.end());
  }
  return all;
}

TEST(Chunked, PrefillChunksThenDecodeReproduceFullLogits) {
  auto b = tiny_backend();
  for (const char* key : {"len5", "len150"}) {
    const auto prompt = reference().i32(std::string(key) + ".ids");
    const auto cont = reference().i32(std::string(key) + ".greedy");
    const auto ref = reference().f32(std::string(key) + ".full_logits");
    for (int chunk : {1, 7, 64, 100}) {
      const auto got = chunked_run(*b, 3, prompt, cont, chunk, pages(10, 12));
      const double err = rel_l2(got, ref);
      std::printf("  %s chunk %3d + 16 decode steps: rel L2 %.3g\n", key, chunk, err);
      EXPECT_LT(err, kTol) << key << " chunk " << chunk;
      // The last decode steps alone (where chunking errors would accumulate).
      const size_t tail = 16 * kVocab;
      EXPECT_LT(rel_l2(got.data() + got.size() - tail, ref.data() + ref.size() - tail, tail), kTol);
    }
  }
}

TEST(Chunked, AlternativeNumericalPathsAgree) {
  const auto ids = reference().i32("len150.ids");
  const auto ref = reference().f32("len150.logits");
  for (int variant = 0; variant < 2; ++variant) {
    auto b = tiny_backend();
    ForwardOptions o;
    if (variant == 0) o.kda_chunked_prefill = false;  // token-by-token recurrence for the prefill
    else o.mla_absorbed_prefill = true;               // absorbed MLA over the latent cache
    b->set_forward_options(o);
    ForwardBatch batch;
    batch.add(0, 0, ids, pages(0, 10), true);
    std::vector<float> logits = forward_logits(*b, batch);
    const double err = rel_l2(logits, ref);
    std::printf("  %s: rel L2 %.3g\n", variant ? "absorbed MLA prefill" : "recurrent KDA prefill", err);
    EXPECT_LT(err, kTol);
  }
}

// Several sequences in one batch (a fresh prefill, a later prefill chunk, decodes) give the logits each
// gives alone.
TEST(Chunked, MixedBatchEqualsEachAlone) {
  const auto p65 = reference().i32("len65.ids");
  const auto p5 = reference().i32("len5.ids");
  const auto p150 = reference().i32("len150.ids");
  const std::vector<int32_t> p150a(p150.begin(), p150.begin() + 100), p150b(p150.begin() + 100, p150.end());
  const std::vector<int32_t> d5 = {reference().i32("len5.greedy")[0]};
  const std::vector<int32_t> d150 = {7, 11};

  // Alone: each sequence on its own backend.
  auto alone = [&](const std::vector<std::pair<int64_t, std::vector<int32_t>>>& steps, bool all) {
    auto b = tiny_backend();
    std::vector<float> logits;
    for (const auto& [ctx, ids] : steps) {
      ForwardBatch batch;
      batch.add(0, ctx, ids, pages(0, 12), all);
      logits = forward_logits(*b, batch);
    }
    return logits;
  };
  const auto a65 = alone({{0, p65}}, true);
  const auto a5 = alone({{0, p5}, {5, d5}}, false);
  const auto a150 = alone({{0, p150a}, {100, p150b}}, true);

  // Together: prefill p5 and p150a first (batched too), then one mixed batch.
  auto b = tiny_backend();
  {
    ForwardBatch warm;
    warm.add(1, 0, p5, pages(20, 12));
    warm.add(2, 0, p150a, pages(40, 12));
    forward_logits(*b, warm);
  }
  ForwardBatch mixed;
  mixed.add(2, 100, p150b, pages(40, 12), true);  // a later prefill chunk
  mixed.add(0, 0, p65, pages(0, 12), true);        // a fresh prompt
  mixed.add(1, 5, d5, pages(20, 12));              // a decode step
  std::vector<float> logits = forward_logits(*b, mixed);
  ASSERT_EQ(logits.size(), size_t(50 + 65 + 1) * kVocab);
  const double e150 = rel_l2(logits.data(), a150.data(), a150.size());
  const double e65 = rel_l2(logits.data() + 50 * kVocab, a65.data(), a65.size());
  const double e5 = rel_l2(logits.data() + 115 * kVocab, a5.data(), a5.size());
  std::printf("  batched vs alone: %.3g %.3g %.3g\n", e150, e65, e5);
  EXPECT_LT(e150, kTol);
  EXPECT_LT(e65, kTol);
  EXPECT_LT(e5, kTol);

  // Several decodes in one batch, continuing the sequences above.
  ForwardBatch decodes;
  decodes.add(0, 65, {d150[0]}, pages(0, 12));
  decodes.add(2, 150, {d150[1]}, pages(40, 12));
  logits = forward_logits(*b, decodes);
  const auto s65 = alone({{0, p65}, {65, {d150[0]}}}, false);
  const auto s150 = alone({{0, p150a}, {100, p150b}, {150, {d150[1]}}}, false);
  EXPECT_LT(rel_l2(logits.data(), s65.data(), s65.size()), kTol);
  EXPECT_LT(rel_l2(logits.data() + kVocab, s150.data(), s150.size()), kTol);
}

// A slot that served another sequence is zeroed when a new sequence (context_len 0) takes it.
TEST(Chunked, ReusedSlotStartsFromZero) {
  auto b = tiny_backend();
  std::vector<float> second;
  ForwardBatch other;
  other.add(0, 0, reference().i32("len150.ids"), pages(0, 12));
  forward_logits(*b, other);
  ForwardBatch batch;
  batch.add(0, 0, reference().i32("len65.ids"), pages(0, 12), true);
  second = forward_logits(*b, batch);
  EXPECT_LT(rel_l2(second, reference().f32("len65.logits")), kTol);
}

TEST(Chunked, RowsWithoutLogits) {
  auto b = tiny_backend();
  ForwardBatch batch;
  auto& s = batch.add(0, 0, reference().i32("len5.ids"), pages(0, 1));
  s.need_logits = false;
  batch.add(1, 0, reference().i32("len1.ids"), pages(1, 1));
  std::vector<float> logits = forward_logits(*b, batch);
  ASSERT_EQ(logits.size(), size_t(kVocab));
  EXPECT_LT(rel_l2(logits, reference().f32("len1.logits")), kTol);
  // An empty step is allowed and produces no rows.
  logits = forward_logits(*b, ForwardBatch{});
  EXPECT_TRUE(logits.empty());
  EXPECT_TRUE(forward_sample(*b, ForwardBatch{}, {}).empty());
}

TEST(Chunked, InconsistentBatchesAreRejected) {
  auto b = tiny_backend(2);
  auto expect_error = [&](ForwardBatch batch, const std::string& what) {
    try {
      forward_logits(*b, batch);
      ADD_FAILURE() << "no error for " << what;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  ForwardBatch bad_slot;
  bad_slot.add(5, 0, {1, 2, 3}, pages(0, 1));
  expect_error(bad_slot, "state slot 5");
  ForwardBatch no_pages;
  no_pages.add(0, 10, {1, 2, 3, 4, 5, 6, 7}, pages(0, 1));
  expect_error(no_pages, "block table");
  ForwardBatch same_slot;
  same_slot.add(0, 0, {1}, pages(0, 1));
  same_slot.add(0, 0, {2}, pages(1, 1));
  expect_error(same_slot, "used twice");
  ForwardBatch bad_token;
  bad_token.add(0, 0, {1, 5000}, pages(0, 1));
  expect_error(bad_token, "token id 5000");
}

}  // namespace
}  // namespace ds::test
