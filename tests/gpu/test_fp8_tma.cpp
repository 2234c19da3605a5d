// The FP8 wgmma kernel (moe_gemm_fp8_wgmma.cu) with its weight rows copied by TMA (DeviceContext::switches
// .fp8_tma) against the same kernel's cp.async copies: the shared-memory tiles are the same bytes, so the
// outputs must be equal bit for bit; and both against the host on the dequantized weights (bf16 bound).
// Grouped launches (SiLU-mul through a row gather, and the plain product) at 16- and 64-token tiles over
// experts of 1..150 rows, N a multiple of 64 so that TMA applies; then N = 200, where it does not (the
// launch falls back to cp.async: the same output); dense launches (16-token tiles, 40 rows) of 128-row blocks.
#include <gtest/gtest.h>

#include "cuda/kernels/moe_gemm.h"
#include "cuda/kernels/moe_gemm_fp8_wgmma.h"
#include "fp8_host.h"
#include "gemm_ref.h"
#include "gpu_test_util.h"

namespace ds::gpu::test {
namespace {

// Runs one launch of g's shape with fp8_tma off and on; returns both outputs.
std::pair<std::vector<float>, std::vector<float>> both(MoeGemmParams g, size_t out_elems) {
  std::vector<float> y[2];
  for (int tma = 0; tma < 2; ++tma) {
    DeviceContext ctx = test_ctx();
    ctx.switches.fp8_xsplit = true;
    ctx.switches.fp8_tma = tma == 1;
    EXPECT_TRUE(moe_gemm_fp8_wgmma_applies(g, ctx));
    DeviceBuffer dy(out_elems * 2);
    poison(dy);
    g.y = dy.data();
    run_moe_gemm(g, ctx);
    DS_CUDA_CHECK(cudaDeviceSynchronize());
    y[tma] = to_host(dy.data(), out_elems, DType::BF16);
  }
  return {y[0], y[1]};
}

void grouped(int tile, int N) {
  GroupedMoeCase gc = grouped_moe_case(tile);
  gc.N = N;
  const int mats = gc.mats, K = gc.K, rows = gc.rows, R = gc.R;
  auto dae = to_device_raw(gc.expert), das = to_device_raw(gc.start), dna = to_device_raw(gc.num_active),
       dxr = to_device_raw(gc.xr);
  const auto x = rounded(randn(size_t(R) * K, 1300 + tile), DType::BF16);
  auto dx = to_device(x, DType::BF16);
  for (int silu = 0; silu < 2; ++silu) {
    const int wrows = silu ? 2 * N : N;
    const auto w = random_fp8(mats, wrows, K, 7, 7, 1400 + silu);  // 128 x 128 blocks
    auto dq = to_device_raw(w.q), ds = to_device_raw(w.scale);
    DeviceBuffer split(x_split_bytes(R, K));
    MoeGemmParams g;
    g.x = dx.data();
    g.ldx = K;
    g.x_rows = silu ? dxr.as<int32_t>() : nullptr;
    g.w = dq.data();
    g.w_matrix_stride = int64_t(wrows) * K;
    g.w_scale = ds.as<float>();
    g.scale_ld = w.ld;
    g.scale_row_shift = w.rs;
    g.scale_k_shift = w.ks;
    g.scale_matrix_stride = w.scale_rows() * w.ld;
    g.ldy = N;
    g.N = N;
    g.K = K;
    g.silu_mul = silu;
    g.active_expert = dae.as<int32_t>();
    g.active_start = das.as<int32_t>();
    g.num_active = dna.as<int32_t>();
    g.max_active = int(gc.expert.size()) + 2;
    g.max_rows = rows;
    g.tile_tokens = tile;
    g.x_split = split.data();
    g.x_split_rows = silu ? R : rows;
    const auto [cp, tma] = both(g, size_t(rows) * N);
    const auto want = grouped_moe_reference(x, w.dq, N, K, silu, gc.expert, gc.start, silu ? &gc.xr : nullptr);
    EXPECT_EQ(tma, cp) << (silu ? "gate/up" : "down") << ", " << tile << "-token tiles, N " << N;
    EXPECT_LT(rel_l2(tma, want), 2e-2) << (silu ? "gate/up" : "down") << ", " << tile << "-token tiles, N " << N;
  }
}

TEST(GpuFp8Tma, GroupedMatchesCpAsyncBitForBit) {
  DS_REQUIRE_GPU();
  if (test_ctx().info.sm_major != 9) GTEST_SKIP() << "the FP8 wgmma kernel needs sm_90";
  for (int tile : {16, 64}) {
    grouped(tile, 256);  // whole 64- and 128-row tiles: TMA
    grouped(tile, 200);  // a partial tile: the cp.async copies either way
  }
}

TEST(GpuFp8Tma, DenseMatchesCpAsyncBitForBit) {
  DS_REQUIRE_GPU();
  if (test_ctx().info.sm_major != 9) GTEST_SKIP() << "the FP8 wgmma kernel needs sm_90";
  const int M = 40, N = 8192, K = 2304;  // 64 blocks of 128 rows: no split-K, whole tiles
  const auto x = rounded(randn(size_t(M) * K, 1500), DType::BF16);
  auto dx = to_device(x, DType::BF16);
  const auto w = random_fp8(1, N, K, 7, 7, 1501);
  auto dq = to_device_raw(w.q), ds = to_device_raw(w.scale);
  DeviceBuffer split(x_split_bytes(M, K));
  MoeGemmParams g;
  g.x = dx.data();
  g.ldx = K;
  g.w = dq.data();
  g.w_matrix_stride = int64_t(N) * K;
  g.w_scale = ds.as<float>();
  g.scale_ld = w.ld;
  g.scale_row_shift = w.rs;
  g.scale_k_shift = w.ks;
  g.scale_matrix_stride = w.scale_rows() * w.ld;
  g.ldy = N;
  g.N = N;
  g.K = K;
  g.dense_rows = g.max_rows = M;  // (max_rows sizes the grid: 0 launches nothing)
  g.tile_tokens = 16;
  g.x_split = split.data();
  g.x_split_rows = M;
  const auto [cp, tma] = both(g, size_t(M) * N);
  const std::vector<int32_t> expert{0}, start{0, M};
  const auto want = grouped_moe_reference(x, w.dq, N, K, false, expert, start, nullptr);
  EXPECT_EQ(tma, cp);
  EXPECT_LT(rel_l2(tma, want), 2e-2);
}

}  // namespace
}  // namespace ds::gpu::test
