// Decode steps replayed from a graph bucket larger than the batch: the padding rows' KDA decode skipped
// (DELTASERVE_CUDA_KDA_SKIP_PADDING, KdaDecodeParams::skip_padding) gives the real rows the logits they get
// with the padding rows run.
#include <gtest/gtest.h>

#include "backend_with_env.h"
#include "gpu_test_util.h"

namespace ds::gpu::test {
namespace {

// Three sequences prefilled, then decode steps of the three (graph bucket 4: one padding row) and of two
// (bucket 2: none); the decode logits, fp32 activations.
std::vector<float> decode_logits(const char* skip) {
  auto gpu = make_cuda_backend_with(cuda_test_options(std::string(DS_FIXTURES_DIR) + "/tiny/model", "float32", 4),
                                    "DELTASERVE_CUDA_KDA_SKIP_PADDING", skip);
  const int P = 20;
  std::vector<std::vector<int32_t>> pages(3);
  ForwardBatch pre;
  for (int s = 0; s < 3; ++s) {
    for (int i = 0; i < 2; ++i) pages[size_t(s)].push_back(s * 2 + i);
    std::vector<int32_t> ids(static_cast<size_t>(P));
    for (int i = 0; i < P; ++i) ids[size_t(i)] = int32_t((i * 7919 + 13 + s * 101) % 1790);
    pre.add(s, 0, ids, pages[size_t(s)]);
  }
  forward_logits(*gpu, pre);
  std::vector<float> out;
  for (int step = 0; step < 3; ++step) {
    ForwardBatch d;
    const int seqs = step < 2 ? 3 : 2;
    for (int s = 0; s < seqs; ++s) d.add(s, P + step, {int32_t(100 + 7 * s + step)}, pages[size_t(s)]);
    const auto l = forward_logits(*gpu, d);
    out.insert(out.end(), l.begin(), l.end());
  }
  return out;
}

TEST(GpuGraphPadding, SkippedPaddingRowsKeepTheLogits) {
  DS_REQUIRE_GPU();
  const auto ran = decode_logits("0"), skipped = decode_logits("1");
  ASSERT_EQ(ran.size(), skipped.size());
  const double e = rel_l2(skipped, ran);
  std::printf("[graph padding] decode logits, padding rows skipped vs run: rel L2 %.3g\n", e);
  EXPECT_LT(e, 1e-6);
}

}  // namespace
}  // namespace ds::gpu::test
