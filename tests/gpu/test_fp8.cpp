// FP8 weights on the GPU: the block quantizer and dequantizer against model/quant.h (bit-exact), the
// FP8 GEMV (every epilogue, per-channel and block scales, 1..13 rows, K tiled, grouped with gathered
// rows) against the CPU GEMM on the dequantized weights, and the tiny model loaded from each quantized
// fixture (tests/common/quant_fixture.h) and with --quantization fp8, in fp32 activations, against the
// CPU backend on the same checkpoint with the routing pinned to the CPU's: within 1e-4 relative L2 (the
// INT4 fixtures' model tests: test_int4_model.cpp).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <map>
#include <tuple>

#include "../common/quant_fixture.h"
#include "backend_with_env.h"
#include "model_vs_cpu.h"
#include "cuda/cuda_backend.h"
#include "cuda/kernels/fp8.h"
#include "cuda/kernels/gemv.h"
#include "cuda/kernels/moe_gemm.h"
#include "cuda/kernels/moe_gemm_frag.h"
#include "cuda/kernels/moe_gemm_fp8_wgmma.h"
#include "fp8_host.h"
#include "gemm_ref.h"
#include "gpu_test_util.h"
#include "model/cpu_backend.h"
#include "model/quant.h"

namespace ds::gpu::test {
namespace {

const DType kTypes[] = {DType::F32, DType::BF16};

struct Layout {
  int rs, ks;
  const char* name;
};
const Layout kLayouts[] = {{0, 31, "channel"}, {7, 7, "block128"}, {5, 5, "block32"}};

TEST(GpuFp8, QuantizeAndDequantizeMatchTheHost) {
  DS_REQUIRE_GPU();
  const int64_t N = 300, K = 520;  // partial blocks on both sides
  for (DType t : kTypes)
    for (int b : {5, 7}) {
      const auto w = rounded(randn(size_t(N * K), 7, 0.1f), t);
      auto dw = to_device(w, t);
      const int64_t ld = (K + (1 << b) - 1) >> b, srows = (N + (1 << b) - 1) >> b;
      DeviceBuffer dq(size_t(N * K)), ds(size_t(srows * ld) * 4), dout(size_t(N * K) * 4);
      Fp8Matrix m{dq.as<uint8_t>(), ds.as<float>(), N, K, ld, b, b};
      run_quantize_fp8(dw.data(), t, m, test_ctx());
      std::vector<uint8_t> hq(size_t(N * K));
      std::vector<float> hs(size_t(srows * ld));
      quantize_fp8_blocks(w.data(), N, K, 1 << b, 1 << b, hq.data(), hs.data());
      EXPECT_EQ(to_host_raw<uint8_t>(dq.data(), hq.size()), hq) << dtype_name(t) << " block " << (1 << b);
      EXPECT_EQ(to_host_raw<float>(ds.data(), hs.size()), hs) << dtype_name(t) << " block " << (1 << b);
      run_dequantize_fp8(m, dout.data(), DType::F32, K, test_ctx());
      std::vector<float> f = w;
      fake_quantize_fp8_blocks(f.data(), N, K, 1 << b, 1 << b);
      EXPECT_EQ(to_host_raw<float>(dout.data(), f.size()), f);
    }
}

// y = x . W^T with FP8 W, each epilogue, for every scale layout and row count.
TEST(GpuFp8, GemvEpiloguesLayoutsAndRows) {
  DS_REQUIRE_GPU();
  const int N = 384, K = 2304;
  for (const Layout& L : kLayouts)
    for (DType t : kTypes)
      for (int M : {1, 2, 5, 8, 13}) {
        const auto w = random_fp8(1, 2 * N, K, L.rs, L.ks, 100 + M);  // [gate; up] for SiluMul
        auto dq = to_device_raw(w.q), ds = to_device_raw(w.scale);
        const auto x = rounded(randn(size_t(M) * K, 200 + M), t);
        auto dx = to_device(x, t);
        GemvParams p;
        p.x = dx.data();
        p.ldx = K;
        set_fp8(p, w, dq, ds);
        p.N = 2 * N;
        p.K = K;
        p.M = M;
        const auto ref = cpu_gemm(x, K, w.dq, M, 2 * N, K);
        const std::string tag = std::string(L.name) + " " + std::string(dtype_name(t)) + " M=" + std::to_string(M);
        {  // Store, fp32 output
          DeviceBuffer dy(size_t(M) * 2 * N * 4);
          poison(dy);
          p.y = dy.data();
          p.ldy = 2 * N;
          p.y_f32 = true;
          run_gemv(p, t, test_ctx());
          EXPECT_LT(rel_l2(to_host(dy.data(), ref.size(), DType::F32), ref), t == DType::F32 ? 1e-5 : 1e-2) << tag;
          p.y_f32 = false;
        }
        {  // Accumulate into a residual in the activation dtype
          const auto r0 = rounded(randn(size_t(M) * 2 * N, 300 + M), t);
          auto dr = to_device(r0, t);
          p.y = dr.data();
          p.epi = GemvEpilogue::Accumulate;
          run_gemv(p, t, test_ctx());
          auto want = ref;
          for (size_t i = 0; i < want.size(); ++i) want[i] += r0[i];
          EXPECT_LT(rel_l2(to_host(dr.data(), want.size(), t), want), tol(t)) << tag << " accumulate";
          p.epi = GemvEpilogue::Store;
        }
        {  // SiluMul: rows [0, N) gate, [N, 2N) up
          DeviceBuffer dy(size_t(M) * N * 4);
          poison(dy);
          p.y = dy.data();
          p.ldy = N;
          p.N = N;
          p.epi = GemvEpilogue::SiluMul;
          run_gemv(p, t, test_ctx());
          const auto want = silu_mul_rows(ref, M, N);
          EXPECT_LT(rel_l2(to_host(dy.data(), want.size(), t), want), tol(t) * 2) << tag << " silu_mul";
        }
      }
}

// K larger than one x tile at 8 fp32 rows (K tiled) and a K that is not a multiple of the block.
TEST(GpuFp8, GemvTiledKAndPartialBlocks) {
  DS_REQUIRE_GPU();
  for (auto [K, rs, ks] : {std::tuple{9216, 0, 31}, std::tuple{9216, 7, 7}, std::tuple{2320, 7, 7}}) {
    const int N = 130, M = 8;
    const auto w = random_fp8(1, N, K, rs, ks, 11);
    auto dq = to_device_raw(w.q), ds = to_device_raw(w.scale);
    const auto x = randn(size_t(M) * K, 12);
    auto dx = to_device(x, DType::F32);
    DeviceBuffer dy(size_t(M) * N * 4);
    poison(dy);
    GemvParams p;
    p.x = dx.data();
    p.ldx = K;
    set_fp8(p, w, dq, ds);
    p.y = dy.data();
    p.ldy = N;
    p.N = N;
    p.K = K;
    p.M = M;
    run_gemv(p, DType::F32, test_ctx());
    const auto ref = cpu_gemm(x, K, w.dq, M, N, K);
    EXPECT_LT(rel_l2(to_host(dy.data(), ref.size(), DType::F32), ref), 1e-5) << "K=" << K << " rs=" << rs;
  }
}

// Grouped (MoE): groups pick weight matrices (and their scales) and gather rows.
TEST(GpuFp8, GemvGroupedGather) {
  DS_REQUIRE_GPU();
  const int G = 6, N = 128, K = 256, Trows = 10;
  const std::vector<int32_t> slot_weight = {5, 0, 2};
  const std::vector<int32_t> slot_start = {0, 1, 11, 14};
  const std::vector<int32_t> rows = {9, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 4, 4, 2};
  const int total = slot_start.back();
  for (const Layout& L : kLayouts)
    for (DType t : kTypes) {
      const auto w = random_fp8(G, N, K, L.rs, L.ks, 51);
      auto dq = to_device_raw(w.q), ds = to_device_raw(w.scale);
      const auto x = rounded(randn(size_t(Trows) * K, 50), t);
      auto dx = to_device(x, t);
      auto dsw = to_device_raw(slot_weight), dss = to_device_raw(slot_start), drows = to_device_raw(rows);
      std::vector<int32_t> na = {3};
      auto dna = to_device_raw(na);
      DeviceBuffer dy(size_t(total) * N * 4);
      poison(dy);
      GemvParams p;
      p.x = dx.data();
      p.ldx = K;
      p.x_rows = drows.as<int32_t>();
      set_fp8(p, w, dq, ds);
      p.w_matrix_stride = int64_t(N) * K;
      p.y = dy.data();
      p.ldy = N;
      p.N = N;
      p.K = K;
      p.num_groups = 5;
      p.group_weight = dsw.as<int32_t>();
      p.group_start = dss.as<int32_t>();
      p.num_active = dna.as<int32_t>();
      p.max_rows = 10;
      run_gemv(p, t, test_ctx());
      const auto ref = grouped_reference(x, w.dq, N, K, slot_weight, slot_start, rows);
      EXPECT_LT(rel_l2(to_host(dy.data(), ref.size(), t), ref), tol(t)) << L.name << " " << dtype_name(t);
    }
}

// The x split of the FP8 wgmma kernel (moe_gemm_fp8_wgmma.h) against its definition: per row and 128-column
// block the least power-of-two scale s with amax / s <= 448, hi and lo e4m3 with (hi + lo) * s equal to the
// bf16 value whenever |x| >= amax / 224 and within s * 2^-10 below; rows of mixed magnitudes, a zero
// block and tiny values.
TEST(GpuFp8, XSplitReconstructsBf16) {
  DS_REQUIRE_GPU();
  const int rows = 7, K = 384, ldx = 392;
  auto x = randn(size_t(rows) * ldx, 4242);
  for (int r = 0; r < rows; ++r)
    for (int k = 0; k < K; ++k) {
      float& v = x[size_t(r) * ldx + size_t(k)];
      v *= std::ldexp(1.f, (r * 11) % 40 - 20);      // row magnitudes 2^-20 .. 2^19
      if (k % 37 == 5) v *= 1e-6f;                     // tiny values beside large ones
      if (r == 3 && k >= 128 && k < 256) v = 0.f;     // a zero block
    }
  x = rounded(x, DType::BF16);
  auto dx = to_device(x, DType::BF16);
  DeviceBuffer out(x_split_bytes(rows, K));
  run_x_split(XSplitParams{.x = dx.data(), .ldx = ldx, .rows = rows, .K = K, .out = out.data()}, test_ctx());
  std::vector<uint8_t> h(x_split_bytes(rows, K));
  DS_CUDA_CHECK(cudaMemcpy(h.data(), out.data(), h.size(), cudaMemcpyDeviceToHost));
  const int64_t plane = int64_t(rows) * K;
  const float* sc = reinterpret_cast<const float*>(h.data() + 2 * plane);
  int exact = 0;
  for (int r = 0; r < rows; ++r)
    for (int b = 0; b < K / 128; ++b) {
      float amax = 0.f;
      for (int k = b * 128; k < b * 128 + 128; ++k) amax = std::max(amax, std::fabs(x[size_t(r) * ldx + size_t(k)]));
      const float s = sc[r * (K / 128) + b];
      int e = 0;
      ASSERT_EQ(std::frexp(s, &e), 0.5f) << "scale not a power of two, row " << r << " block " << b;
      if (amax == 0.f) {
        EXPECT_EQ(s, 1.f);
      } else {
        EXPECT_LE(amax / s, 448.f) << r << " " << b;
        EXPECT_GT(amax / s, 224.f) << r << " " << b;
      }
      for (int k = b * 128; k < b * 128 + 128; ++k) {
        const float v = x[size_t(r) * ldx + size_t(k)];
        const size_t i = size_t(r) * K + size_t(k);
        const float got = (fp8_e4m3_to_f32(h[i]) + fp8_e4m3_to_f32(h[size_t(plane) + i])) * s;
        if (std::fabs(v) >= amax / 224.f) {
          EXPECT_EQ(got, v) << "row " << r << " k " << k;
          ++exact;
        } else {
          EXPECT_LE(std::fabs(got - v), s * 0x1p-10f) << "row " << r << " k " << k;
        }
      }
    }
  EXPECT_GT(exact, rows * K / 2);  // most values are in the exact range
  // the sums of hi + lo over each 32 columns (the INT4 subnormal form's zero-point term), from their 16-byte
  // boundary: the decoded values summed in fp32, within the rounding of a 32-term fp32 sum
  ASSERT_EQ(x_split_sums_offset(rows, K) % 16, 0);
  const float* sums = reinterpret_cast<const float*>(h.data() + x_split_sums_offset(rows, K));
  for (int r = 0; r < rows; ++r)
    for (int g = 0; g < K / 32; ++g) {
      double want = 0, mag = 0;
      for (int k = g * 32; k < g * 32 + 32; ++k) {
        const size_t i = size_t(r) * K + size_t(k);
        const double v = double(fp8_e4m3_to_f32(h[i])) + double(fp8_e4m3_to_f32(h[size_t(plane) + i]));
        want += v;
        mag += std::fabs(v);
      }
      EXPECT_NEAR(sums[r * (K / 32) + g], want, 64 * 0x1p-24 * mag + 1e-30) << "row " << r << " group " << g;
    }
}

// The FP8 grouped-GEMM kernel as one dense matrix (MoeGemmParams::dense_rows: LayerStep::linear's FP8
// projections at 9..160 rows), every FP8 path (cp.async-staged raw bytes, the register path, at 16-row
// tiles the fragment kernel with token tiles of 8 and 16, and the x-split FP8 wgmma kernel at 16- and 64-token
// tiles, also with split-K: several CTAs a tile, the last adding the partials, the counters reused launch
// after launch), 16- and 64-row tiles, Store and Accumulate, every scale layout, N not a multiple of the 128-row weight tile.
TEST(GpuFp8, DenseTileGemmMatchesHost) {
  DS_REQUIRE_GPU();
  const int N = 200, K = 512;
  for (const Layout& L : kLayouts)
    for (int M : {9, 16, 40, 100, 160}) {
      const auto w = random_fp8(1, N, K, L.rs, L.ks, 700 + M);
      auto dq = to_device_raw(w.q), ds = to_device_raw(w.scale);
      const auto x = rounded(randn(size_t(M) * K, 800 + M), DType::BF16);
      auto dx = to_device(x, DType::BF16);
      const auto ref = cpu_gemm(x, K, w.dq, M, N, K);
      const auto r0 = rounded(randn(size_t(M) * N, 900 + M), DType::BF16);
      DeviceBuffer split(x_split_bytes(M, K));
      const int sms = test_ctx().num_sms();
      DeviceBuffer partials(size_t(2) * sms * 8 * 128 * 4), counters(size_t(sms) * 4);
      DS_CUDA_CHECK(cudaMemset(counters.data(), 0, counters.bytes()));
      for (int variant = 0; variant < 6; ++variant)  // 4: x split + FP8 wgmma; 5: the same with split-K
        for (int tile : {16, 64})
          for (int acc = 0; acc < 2; ++acc) {
            const int staged = variant != 1;
            DeviceContext ctx = test_ctx();
            ctx.switches.fp8_frag = variant == 2 ? 8 : variant == 3 ? 16 : 0;
            ctx.switches.fp8_xsplit = variant >= 4;
            ctx.switches.fp8_split_k = variant == 5;
            auto dy = acc ? to_device(r0, DType::BF16) : DeviceBuffer(size_t(M) * N * 2);
            if (!acc) poison(dy);
            MoeGemmParams g;
            g.x = dx.data();
            g.ldx = K;
            g.w = dq.data();
            g.w_scale = ds.as<float>();
            g.scale_ld = w.ld;
            g.scale_row_shift = w.rs;
            g.scale_k_shift = w.ks;
            g.y = dy.data();
            g.ldy = N;
            g.N = N;
            g.K = K;
            g.dense_rows = g.max_rows = M;
            g.tile_tokens = tile;
            g.accumulate = acc;
            g.fp8_staged = staged;
            g.x_split = split.data();
            g.x_split_rows = M;
            g.splitk_partials = partials.as<float>();
            g.splitk_capacity = int64_t(2) * sms * 8 * 128;
            g.splitk_counters = counters.as<int>();
            g.splitk_items = sms;
            const bool wgmma = variant >= 4 && L.ks >= 7 && ctx.info.sm_major == 9;
            EXPECT_EQ(moe_gemm_fp8_wgmma_applies(g, ctx), wgmma);
            EXPECT_EQ(moe_gemm_frag_applies(g, ctx), (variant == 2 || variant == 3) && tile == 16 && L.ks >= 6);
            run_moe_gemm(g, ctx);
            auto want = ref;
            if (acc)
              for (size_t i = 0; i < want.size(); ++i) want[i] += r0[i];
            EXPECT_LT(rel_l2(to_host(dy.data(), want.size(), DType::BF16), want), tol(DType::BF16))
                << L.name << " M=" << M << " tile " << tile << " variant " << variant
                << (acc ? " accumulate" : " store");
          }
    }
}

// The fragment kernel (moe_gemm_frag.h) on grouped launches against the host on the dequantized weights:
// gate/up with SiLU-mul through a row gather and a plain product without one (the down projection's form),
// active experts of 1 to 20 rows (more than one token tile), two more slots in the grid than experts
// active, N not a multiple of 16, K of 36 k blocks, channel and 128 x 128 block scales, token tiles of 8
// and 16; the staged tile kernel on the same launches (and on 32-wide blocks, which the fragment kernel
// declines). Then the FP8 wgmma kernel's 64-token tiles (prefill-sized launches) on experts of 1 to 150 rows
// (several tiles, partial ones) for the scale layouts it takes, also multiplying x's hi part only (x_hi_only:
// against the host product of x rounded the same way, x_hi_rounded).
TEST(GpuFp8, GroupedFragKernelMatchesHost) {
  DS_REQUIRE_GPU();
  for (const int tile : {16, 64}) {
    const GroupedMoeCase gc = grouped_moe_case(tile);
    const int mats = gc.mats, N = gc.N, K = gc.K, rows = gc.rows, R = gc.R;
    const std::vector<int32_t>& expert = gc.expert;
    const std::vector<int32_t>& start = gc.start;
    const std::vector<int32_t>& xr = gc.xr;
    auto dae = to_device_raw(expert), das = to_device_raw(start), dna = to_device_raw(gc.num_active),
         dxr = to_device_raw(xr);
    const auto x = rounded(randn(size_t(R) * K, 1100), DType::BF16);
    auto dx = to_device(x, DType::BF16);
    for (const Layout& L : kLayouts)
      for (int silu = 0; silu < 2; ++silu) {
        if (tile == 64 && L.ks < 7) continue;  // the 64-token tiles take scale blocks of 128+ columns
        const int wrows = silu ? 2 * N : N;
        const auto w = random_fp8(mats, wrows, K, L.rs, L.ks, 1000 + silu);
        auto dq = to_device_raw(w.q), ds = to_device_raw(w.scale);
        const auto want = grouped_moe_reference(x, w.dq, N, K, silu, expert, start, silu ? &xr : nullptr);
        // x as the hi part alone carries it (the down launch's x is rows [0, rows) of the same x here)
        const auto want_hi = tile == 64 ? grouped_moe_reference(x_hi_rounded(x, R, K), w.dq, N, K, silu, expert,
                                                                start, silu ? &xr : nullptr)
                                        : want;
        DeviceBuffer split(x_split_bytes(R, K));
        // -1: x split, FP8 wgmma (4 stages); -3: the same with 3 stages; -2, -4: x's hi part only (4, 3 stages)
        for (int frag : {0, 8, 16, -1, -3, -2, -4}) {
          if (tile == 64 && frag >= 0) continue;
          if (tile == 16 && (frag == -2 || frag == -4)) continue;
          DeviceContext ctx = test_ctx();
          ctx.switches.fp8_frag = std::max(frag, 0);
          ctx.switches.fp8_xsplit = frag < 0;
          ctx.switches.fp8_wgmma_stages = frag == -3 || frag == -4 ? 3 : 4;
          DeviceBuffer dy(size_t(rows) * N * 2);
          poison(dy);
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
          g.y = dy.data();
          g.ldy = N;
          g.N = N;
          g.K = K;
          g.silu_mul = silu;
          g.active_expert = dae.as<int32_t>();
          g.active_start = das.as<int32_t>();
          g.num_active = dna.as<int32_t>();
          g.max_active = int(expert.size()) + 2;
          g.max_rows = rows;
          g.tile_tokens = tile;
          g.x_split = split.data();
          g.x_split_rows = silu ? R : rows;
          g.x_hi_only = frag == -2 || frag == -4;
          EXPECT_EQ(moe_gemm_fp8_wgmma_applies(g, ctx), frag < 0 && L.ks >= 7 && ctx.info.sm_major == 9);
          EXPECT_EQ(moe_gemm_frag_applies(g, ctx), frag > 0 && L.ks >= 6 && tile == 16);
          if (tile == 64 && !moe_gemm_fp8_wgmma_applies(g, ctx)) continue;  // (not sm_90: the bf16 paths only)
          run_moe_gemm(g, ctx);
          const auto& ref = g.x_hi_only ? want_hi : want;
          EXPECT_LT(rel_l2(to_host(dy.data(), ref.size(), DType::BF16), ref), tol(DType::BF16))
              << L.name << (silu ? " gate/up" : " down") << " fp8_frag " << frag << ", " << tile << "-token tiles";
          if (g.x_hi_only) {  // (and it is not the hi + lo product: the rounding of x shows)
            EXPECT_GT(rel_l2(want_hi, want), 1e-3) << L.name;
          }
        }
      }
  }
}

TEST(GpuFp8Model, CompressedTensorsChannelMatchesCpu) {
  DS_REQUIRE_GPU();
  auto fx = ds::test::make_fp8_fixture(kTinyModel, ds::test::Fp8Fixture::Channel);
  expect_model_matches_cpu(fx->dir.string(), "", "fp8 channel");
}

TEST(GpuFp8Model, BlockScaledMatchesCpu) {
  DS_REQUIRE_GPU();
  auto fx = ds::test::make_fp8_fixture(kTinyModel, ds::test::Fp8Fixture::Block);
  expect_model_matches_cpu(fx->dir.string(), "", "fp8 block32");
}

TEST(GpuFp8Model, OnlineQuantizationMatchesCpu) {
  DS_REQUIRE_GPU();
  expect_model_matches_cpu(kTinyModel, "fp8", "fp8 online");
}

TEST(GpuFp8Model, Bf16ActivationsMatchCpu) {
  DS_REQUIRE_GPU();
  auto ch = ds::test::make_fp8_fixture(kTinyModel, ds::test::Fp8Fixture::Channel);
  expect_model_matches_cpu(ch->dir.string(), "", "fp8 channel", "bfloat16");
  auto bl = ds::test::make_fp8_fixture(kTinyModel, ds::test::Fp8Fixture::Block);
  expect_model_matches_cpu(bl->dir.string(), "", "fp8 block32", "bfloat16");
  // Online FP8 has 128 x 128 block scales, which by default (DELTASERVE_CUDA_FP8_CUBLAS=3 from 64 rows) put the
  // 65-token prefill's dense projections on cuBLASLt in W8A8, whose e4m3 rounding of x is held to 6e-2 by
  // GpuFp8Cublas.ModelLogitsMatchCpu; here the tile path with hi + lo, the bf16 bound.
  expect_model_matches_cpu(kTinyModel, "fp8", "fp8 online", "bfloat16", 65, 0, "0");
  // a 600-token prefill: the MoE's prefill-sized GEMM tiles (T >= 512) with FP8 experts
  expect_model_matches_cpu(ch->dir.string(), "", "fp8 channel 600", "bfloat16", 600);
}

// The tiny model with experts 128 wide (moe_intermediate_size 64 -> 128, those weights drawn at random), so
// that both expert projections have K a multiple of 128 and run on the FP8 wgmma kernel with x split: the
// 65-token prefill's 16-token tiles, and with DELTASERVE_CUDA_FP8_TILE_MIN_ROWS=1 the 1-token decode steps
// too (the layer's RMSNorm then runs as its own kernel); bf16 activations, GPU vs CPU within 2e-2.
TEST(GpuFp8Model, WideExpertsOnTheFp8TensorCores) {
  DS_REQUIRE_GPU();
  auto wide = ds::test::make_fp8_fixture(kTinyModel, ds::test::Fp8Fixture::Channel, 32,
                                         [](nlohmann::json& c) { c["moe_intermediate_size"] = 128; });
  expect_model_matches_cpu(wide->dir.string(), "", "fp8 channel, 128-wide experts", "bfloat16");
  ::setenv("DELTASERVE_CUDA_FP8_TILE_MIN_ROWS", "1", 1);
  expect_model_matches_cpu(wide->dir.string(), "", "fp8 channel, 128-wide experts, 1-token tiles", "bfloat16");
  ::unsetenv("DELTASERVE_CUDA_FP8_TILE_MIN_ROWS");
  // a 600-token prefill: the experts on the wgmma kernel's 64-token tiles at T >= 512 (every token's x split in
  // the workspace), by default on x's hi part only (DELTASERVE_CUDA_FP8_PREFILL_HI): the experts' inputs rounded
  // to e4m3 (relative step 2^-3..2^-4, RMS ~2.6% an element) against the CPU's bf16 inputs, so that bound is the
  // format's, 6e-2 (the decode steps after it, hi + lo, keep 2e-2; session 24 measured 0.034); with
  // DELTASERVE_CUDA_FP8_PREFILL_HI=0 hi and lo (2e-2), and with DELTASERVE_CUDA_FP8_PREFILL_TILES=0 the
  // mma.sync tiles
  expect_model_matches_cpu(wide->dir.string(), "", "fp8 channel, 128-wide experts, 600-token prefill hi only",
                           "bfloat16", 600, 6e-2);
  ::setenv("DELTASERVE_CUDA_FP8_PREFILL_HI", "0", 1);
  expect_model_matches_cpu(wide->dir.string(), "", "fp8 channel, 128-wide experts, 600-token prefill tiles",
                           "bfloat16", 600);
  ::unsetenv("DELTASERVE_CUDA_FP8_PREFILL_HI");
  ::setenv("DELTASERVE_CUDA_FP8_PREFILL_TILES", "0", 1);
  expect_model_matches_cpu(wide->dir.string(), "", "fp8 channel, 128-wide experts, 600-token prefill mma.sync",
                           "bfloat16", 600);
  ::unsetenv("DELTASERVE_CUDA_FP8_PREFILL_TILES");
}

}  // namespace
}  // namespace ds::gpu::test
