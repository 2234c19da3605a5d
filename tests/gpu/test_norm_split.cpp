// The RMSNorm's fused x split (RmsNormParams::split; LayerInput::split): byte for byte what run_x_split writes
// from the norm's output, and the model with it gives the logits it gives with a split launch per FP8 tile launch.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "../common/quant_fixture.h"
#include "backend_with_env.h"
#include "core/error.h"
#include "cuda/kernels/moe_gemm_fp8_wgmma.h"
#include "cuda/kernels/norm.h"
#include "gpu_test_util.h"
#include "model/backend.h"

namespace ds::gpu::test {
namespace {

// Rows of mixed magnitudes (2^-20 .. 2^19), tiny values beside large ones, a zero 128-column block (zero
// weights there: scale 1) and a row gather; widths of one 128-column block, the 48B model's 2,304 and the
// widest the fused form takes (3,072).
TEST(GpuNormSplit, NormWritesTheXSplitOfItsOutput) {
  DS_REQUIRE_GPU();
  EXPECT_TRUE(rmsnorm_split_fits(2304));
  EXPECT_FALSE(rmsnorm_split_fits(2304 + 64));  // not whole 128-column blocks
  EXPECT_FALSE(rmsnorm_split_fits(3072 + 128));  // wider than a warp's registers hold
  for (int dim : {128, 2304, 3072}) {
    const int rows = 13, ldx = dim + 24;
    auto x = randn(size_t(rows) * ldx, 11 + dim);
    for (int r = 0; r < rows; ++r)
      for (int k = 0; k < dim; ++k) {
        float& v = x[size_t(r) * ldx + size_t(k)];
        v *= std::ldexp(1.f, (r * 11) % 40 - 20);
        if (k % 37 == 5) v *= 1e-6f;
      }
    x = rounded(x, DType::BF16);
    auto w = rounded(randn(size_t(dim), 5), DType::BF16);
    if (dim > 128)
      for (int k = 128; k < 256; ++k) w[size_t(k)] = 0.f;
    std::vector<int32_t> gather(static_cast<size_t>(rows));
    for (int r = 0; r < rows; ++r) gather[size_t(r)] = (r * 5 + 3) % rows;
    auto dx = to_device(x, DType::BF16), dw = to_device(w, DType::BF16);
    DeviceBuffer didx(gather.size() * 4), y1(size_t(rows) * dim * 2), y2(size_t(rows) * dim * 2);
    DS_CUDA_CHECK(cudaMemcpy(didx.data(), gather.data(), gather.size() * 4, cudaMemcpyHostToDevice));
    DeviceBuffer fused(x_split_bytes(rows, dim)), apart(x_split_bytes(rows, dim));
    for (bool gathered : {false, true}) {
      RmsNormParams n;
      n.x = dx.data();
      n.ldx = ldx;
      n.row_index = gathered ? didx.as<int32_t>() : nullptr;
      n.weight = dw.data();
      n.y = y1.data();
      n.ldy = dim;
      n.rows = rows;
      n.dim = dim;
      n.eps = 1e-6f;
      run_rmsnorm(n, DType::BF16, test_ctx());  // the plain norm
      n.y = y2.data();
      n.split = fused.data();
      run_rmsnorm(n, DType::BF16, test_ctx());  // with the split
      run_x_split(XSplitParams{.x = y2.data(), .ldx = dim, .rows = rows, .K = dim, .out = apart.data()}, test_ctx());
      DS_CUDA_CHECK(cudaDeviceSynchronize());
      const auto a = to_host_raw<uint16_t>(y1.data(), size_t(rows) * dim);
      const auto b = to_host_raw<uint16_t>(y2.data(), size_t(rows) * dim);
      EXPECT_EQ(a, b) << "dim " << dim << ": the norm's output changed with the split";
      const auto f = to_host_raw<uint8_t>(fused.data(), x_split_bytes(rows, dim));
      const auto s = to_host_raw<uint8_t>(apart.data(), x_split_bytes(rows, dim));
      ASSERT_EQ(f.size(), s.size());
      size_t diff = 0;
      for (size_t i = 0; i < f.size(); ++i) diff += f[i] != s[i];
      EXPECT_EQ(diff, 0u) << "dim " << dim << (gathered ? " gathered" : "") << ": bytes differ from run_x_split";
    }
  }
  // fp32 activations or a width it cannot take: a named error
  RmsNormParams bad;
  bad.rows = 1;
  bad.dim = 2304 + 64;
  bad.split = reinterpret_cast<void*>(16);
  EXPECT_THROW(run_rmsnorm(bad, DType::BF16, test_ctx()), Error);
  bad.dim = 2304;
  EXPECT_THROW(run_rmsnorm(bad, DType::F32, test_ctx()), Error);
}

// 65-token prefill logits of a model (bf16 activations) with the given DELTASERVE_CUDA_NORM_SPLIT.
std::vector<float> prefill_logits(const std::string& dir, const char* norm_split, int prompt) {
  auto gpu = make_cuda_backend_with(cuda_test_options(dir, "bfloat16", 2), "DELTASERVE_CUDA_NORM_SPLIT", norm_split);
  std::vector<int32_t> ids(static_cast<size_t>(prompt)), pages;
  for (int i = 0; i < prompt; ++i) ids[size_t(i)] = int32_t((i * 7919 + 13) % 1790);
  for (int i = 0; i < (prompt + 15) / 16; ++i) pages.push_back((i * 7 + 3) % 64);
  ForwardBatch pre;
  pre.add(0, 0, ids, pages, true);
  return forward_logits(*gpu, pre);
}

// The tiny model with FP8 weights and 128-wide experts: at 65 and 160 tokens its KDA and MLA input projections and
// its MoE gate/up run on the FP8 tile kernel, which takes the norm's split; the same logits as with the split
// launches (the same bytes: only the order of rounding-free work changes), up to the run-to-run order of the
// split-K partial sums.
TEST(GpuNormSplit, ModelLogitsMatchTheSplitLaunches) {
  DS_REQUIRE_GPU();
  auto wide = ds::test::make_fp8_fixture(std::string(DS_FIXTURES_DIR) + "/tiny/model", ds::test::Fp8Fixture::Channel,
                                         32, [](nlohmann::json& c) { c["moe_intermediate_size"] = 128; });
  for (int prompt : {65, 160}) {
    const auto on = prefill_logits(wide->dir.string(), "1", prompt);
    const auto off = prefill_logits(wide->dir.string(), "0", prompt);
    ASSERT_EQ(on.size(), off.size());
    const double e = rel_l2(on, off);
    std::printf("[norm split] %d-token prefill: logits rel L2 vs split launches %.3g\n", prompt, e);
    EXPECT_LT(e, 1e-6) << prompt;
  }
}

}  // namespace
}  // namespace ds::gpu::test
