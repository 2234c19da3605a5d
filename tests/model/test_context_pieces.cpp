// The MLA prefill's context in pieces (ForwardOptions::mla_context_piece) on the tiny checkpoint: every
// piece size — one position, smaller than a page, than a chunk, larger than the context — gives the
// unpieced logits within fp32 rounding, and the float64 reference.
#include <gtest/gtest.h>

#include <algorithm>

#include "model_test_util.h"

namespace ds::test {
namespace {

// len150's prompt prefilled in chunks of `chunk`, logits for every position.
std::vector<float> prefill(int64_t piece, int chunk) {
  auto b = tiny_backend();
  ForwardOptions o;
  o.mla_context_piece = piece;
  b->set_forward_options(o);
  const auto ids = reference().i32("len150.ids");
  std::vector<float> all;
  for (size_t s = 0; s < ids.size(); s += size_t(chunk)) {
    ForwardBatch batch;
    batch.add(0, int64_t(s), std::vector<int32_t>(ids.begin() + s, ids.begin() + std::min(ids.size(), s + chunk)),
              pages(0, 10), true);
    const auto logits = forward_logits(*b, batch);
    all.insert(all.end(), logits.begin(), logits.end());
  }
  return all;
}

TEST(ContextPieces, AnyPieceSizeGivesTheUnpiecedLogits) {
  const auto ref = reference().f32("len150.logits");
  for (int chunk : {150, 64}) {
    const auto whole = prefill(1 << 20, chunk);
    EXPECT_LT(rel_l2(whole, ref), 1e-5);
    for (int64_t piece : {1, 5, 16, 40, 64, 149}) {
      const auto got = prefill(piece, chunk);
      const double err = rel_l2(got, whole), err_ref = rel_l2(got, ref);
      std::printf("  chunk %3d piece %3ld: rel L2 %.3g vs unpieced, %.3g vs reference\n", chunk, long(piece), err,
                  err_ref);
      EXPECT_LT(err, 2e-6) << "chunk " << chunk << " piece " << piece;
      EXPECT_LT(err_ref, 1e-5) << "chunk " << chunk << " piece " << piece;
    }
  }
}

TEST(ContextPieces, PieceMustBePositive) {
  auto b = tiny_backend();
  ForwardOptions o;
  o.mla_context_piece = 0;
  b->set_forward_options(o);
  ForwardBatch batch;
  batch.add(0, 0, reference().i32("len5.ids"), pages(0, 1));
  EXPECT_THROW(forward_logits(*b, batch), Error);
}

}  // namespace
}  // namespace ds::test
