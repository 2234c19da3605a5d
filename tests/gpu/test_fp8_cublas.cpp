// FP8 dense projections on cuBLASLt's block-scaled FP8 GEMM (CudaEnv::fp8_cublas; gemm.h, LayerStep::linear):
// the activation quantizer (run_quantize_act_fp8) byte for byte against the host's arithmetic, the GEMM with
// 128 x 128 weight scales in cuBLASLt's padded layout and x's scales per row and 128 columns against host
// products (x's hi part alone, and hi + lo accumulating), and the tiny model with the switch on against the CPU
// backend (routing pinned) and against itself with the switch off.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <utility>

#include "../common/quant_fixture.h"
#include "backend_with_env.h"
#include "core/error.h"
#include "cuda/cuda_backend.h"
#include "cuda/gemm.h"
#include "cuda/kernels/fp8.h"
#include "cuda/kernels/moe_gemm.h"
#include "fp8_host.h"
#include "gpu_test_util.h"
#include "model/backend.h"
#include "model/cpu_backend.h"

namespace ds::gpu::test {
namespace {

// x [rows, ldx] (K used) with a magnitude 2^(-6..6) per row and 128-column block, one zero block, bf16-rounded.
std::vector<float> scaled_rows(int rows, int K, int ldx, uint64_t seed) {
  auto x = randn(size_t(rows) * size_t(ldx), seed);
  for (int r = 0; r < rows; ++r)
    for (int k = 0; k < K; ++k) {
      float& v = x[size_t(r) * size_t(ldx) + size_t(k)];
      v *= std::ldexp(1.f, (r * 5 + (k / 128) * 3) % 13 - 6);
      if (r == 1 && k < 128) v = 0.f;
    }
  return rounded(x, DType::BF16);
}

// The host's quantization of one row block: s, hi and lo bytes (fp8_codec.cuh's x split arithmetic).
float host_split(const float* v, uint8_t* hi, uint8_t* lo) {
  float amax = 0.f;
  for (int k = 0; k < 128; ++k) amax = std::max(amax, std::fabs(v[k]));
  const float s = x_split_scale(amax);
  for (int k = 0; k < 128; ++k) {
    const float y = v[k] / s;
    hi[k] = f32_to_fp8_e4m3(y);
    lo[k] = f32_to_fp8_e4m3(y - fp8_e4m3_to_f32(hi[k]));
  }
  return s;
}

TEST(GpuFp8Cublas, ActivationQuantizerMatchesHost) {
  DS_REQUIRE_GPU();
  const int rows = 37, K = 384, ldx = 400;
  const auto x = scaled_rows(rows, K, ldx, 3);
  auto dx = to_device(x, DType::BF16);
  DeviceBuffer hi(size_t(rows) * K), lo(size_t(rows) * K), sc(size_t(rows) * (K / 128) * 4);
  poison(hi);
  poison(lo);
  poison(sc);
  ActQuantParams p;
  p.x = dx.data();
  p.ldx = ldx;
  p.rows = rows;
  p.K = K;
  p.hi = hi.as<uint8_t>();
  p.lo = lo.as<uint8_t>();
  p.scale = sc.as<float>();
  run_quantize_act_fp8(p, DType::BF16, test_ctx());
  const auto h = to_host_raw<uint8_t>(hi.data(), size_t(rows) * K);
  const auto l = to_host_raw<uint8_t>(lo.data(), size_t(rows) * K);
  const auto s = to_host_raw<float>(sc.data(), size_t(rows) * (K / 128));
  size_t bad = 0;
  for (int r = 0; r < rows; ++r)
    for (int kb = 0; kb < K / 128; ++kb) {
      uint8_t wh[128], wl[128];
      const float ws = host_split(&x[size_t(r) * ldx + size_t(kb) * 128], wh, wl);
      bad += s[size_t(kb) * rows + size_t(r)] != ws;  // cuBLASLt's VEC128 layout: a block's rows contiguous
      for (int k = 0; k < 128; ++k) {
        const size_t i = size_t(r) * K + size_t(kb) * 128 + size_t(k);
        bad += h[i] != wh[k];
        bad += l[i] != wl[k];
      }
    }
  EXPECT_EQ(bad, 0u);
  p.K = 200;  // not whole 128-column blocks: a named error
  EXPECT_THROW(run_quantize_act_fp8(p, DType::BF16, test_ctx()), Error);
}

// y (+)= x . w^T for FP8 w with random 128 x 128 block scales (each row's scales padded to cuBLASLt's multiple of
// 4 with a huge value that would show if read): x's hi part alone against the host product of x rounded as the
// quantizer rounds it, hi + lo (two GEMMs) against the product of x itself; bf16 outputs (2^-9 a value).
TEST(GpuFp8Cublas, BlockScaledGemmMatchesHost) {
  DS_REQUIRE_GPU();
  struct Case {
    int M, N, K;
    bool accumulate;
  };
  Gemm gemm;
  for (const Case& c : {Case{16, 256, 384, false}, Case{100, 384, 2304, true}, Case{300, 128, 1024, false},
                        Case{9, 2304, 256, true}}) {
    SCOPED_TRACE("M " + std::to_string(c.M) + " N " + std::to_string(c.N) + " K " + std::to_string(c.K));
    const HostFp8 w = random_fp8(1, c.N, c.K, 7, 7, uint64_t(c.M + c.K));
    const int64_t ld = fp8_block_scale_ld(c.K);
    ASSERT_EQ(ld % 4, 0);
    std::vector<float> padded(size_t(w.scale_rows() * ld), 1e30f);
    for (int64_t r = 0; r < w.scale_rows(); ++r)
      for (int64_t k = 0; k < w.ld; ++k) padded[size_t(r * ld + k)] = w.scale[size_t(r * w.ld + k)];
    auto dq = to_device_raw(w.q);
    auto ds = to_device(padded, DType::F32);
    const auto x = scaled_rows(c.M, c.K, c.K, uint64_t(7 + c.N));
    const auto y0 = rounded(randn(size_t(c.M) * c.N, 9, 0.5f), DType::BF16);
    const auto xr = x_hi_rounded(x, c.M, c.K);
    auto product = [&](const std::vector<float>& a) {
      std::vector<float> y(size_t(c.M) * c.N);
      for (int m = 0; m < c.M; ++m)
        for (int n = 0; n < c.N; ++n) {
          double acc = c.accumulate ? y0[size_t(m) * c.N + size_t(n)] : 0.0;
          for (int k = 0; k < c.K; ++k)
            acc += double(a[size_t(m) * c.K + size_t(k)]) * w.dq[size_t(n) * c.K + size_t(k)];
          y[size_t(m) * c.N + size_t(n)] = float(acc);
        }
      return y;
    };
    auto dx = to_device(x, DType::BF16);
    DeviceBuffer hi(size_t(c.M) * c.K), lo(size_t(c.M) * c.K), sc(size_t(c.M) * (c.K / 128) * 4);
    ActQuantParams p;
    p.x = dx.data();
    p.ldx = c.K;
    p.rows = c.M;
    p.K = c.K;
    p.hi = hi.as<uint8_t>();
    p.lo = lo.as<uint8_t>();
    p.scale = sc.as<float>();
    run_quantize_act_fp8(p, DType::BF16, test_ctx());
    for (bool with_lo : {false, true}) {
      auto dy = to_device(y0, DType::BF16);
      GemmArgs g;
      g.x = hi.data();
      g.ldx = c.K;
      g.w = dq.data();
      g.ldw = c.K;
      g.y = dy.data();
      g.ldy = c.N;
      g.x_dtype = g.w_dtype = DType::F8_E4M3;
      g.y_dtype = DType::BF16;
      g.M = c.M;
      g.N = c.N;
      g.K = c.K;
      g.beta = c.accumulate ? 1.f : 0.f;
      g.w_scale = ds.as<float>();
      g.x_scale = sc.as<float>();
      if (!gemm.supports(g)) {  // (session 28: none at 9 rows; LayerStep::linear then keeps the tile kernel)
        std::printf("[fp8 cublas] M %d N %d K %d: no cuBLASLt algorithm\n", c.M, c.N, c.K);
        EXPECT_LT(c.M, 16) << "cuBLASLt offers no FP8 algorithm at " << c.M << " rows";
        break;
      }
      gemm.run(g, test_ctx().stream);
      if (with_lo) {
        g.x = lo.data();
        g.beta = 1.f;
        gemm.run(g, test_ctx().stream);
      }
      const auto got = to_host(dy.data(), size_t(c.M) * c.N, DType::BF16);
      const double e = rel_l2(got, product(with_lo ? x : xr));
      std::printf("[fp8 cublas] M %d N %d K %d %s: rel L2 %.3g\n", c.M, c.N, c.K, with_lo ? "hi + lo" : "hi", e);
      EXPECT_LT(e, 8e-3) << (with_lo ? "hi + lo" : "hi");
    }
  }
  // FP8 inputs without scales, or K not whole blocks: named errors
  GemmArgs bad;
  bad.x_dtype = bad.w_dtype = DType::F8_E4M3;
  bad.M = bad.N = 16;
  bad.K = 128;
  EXPECT_THROW(gemm.run(bad, test_ctx().stream), Error);
}

// The tiny model's prefill of `ids` on the GPU (options `o`) with its MoE routing pinned to `routes` (the CPU's),
// under DELTASERVE_CUDA_FP8_CUBLAS = `mode`.
std::vector<float> gpu_prefill(const BackendOptions& o, const std::vector<int32_t>& ids,
                               const std::map<int, std::vector<int32_t>>& routes, const char* mode) {
  auto gpu = make_cuda_backend_with(o, "DELTASERVE_CUDA_FP8_CUBLAS", mode);
  cuda_force_routes(*gpu, {{0, routes}});
  std::vector<int32_t> pages;
  for (size_t i = 0; i < (ids.size() + 15) / 16; ++i) pages.push_back(int32_t((i * 7 + 3) % 64));
  ForwardBatch pre;
  pre.add(0, 0, ids, pages, true);
  return forward_logits(*gpu, pre);
}

// The tiny model quantized online (128 x 128 blocks; hidden 256: two blocks a row, padded to four) and from a
// block-128 checkpoint (its scales laid out padded at load), routing pinned to the CPU's: with the switch at 2 its
// FP8 projections run on cuBLASLt (hi + lo at 160 rows, hi alone at 300). Against the CPU backend on the same
// weights within the bf16 bound (2e-2; hi alone rounds x to e4m3, 2^-4 a value: the experts' hi-only prefill
// tiles' bound, 6e-2), as the default path is; and different from the default path's logits (the switch took
// effect).
TEST(GpuFp8Cublas, ModelLogitsMatchCpu) {
  DS_REQUIRE_GPU();
  const std::string tiny = std::string(DS_FIXTURES_DIR) + "/tiny/model";
  auto block = ds::test::make_fp8_fixture(tiny, ds::test::Fp8Fixture::Block, 128);
  for (const auto& [dir, q] : {std::pair{tiny, std::string("fp8")}, std::pair{block->dir.string(), std::string()}})
    for (int prompt : {160, 300}) {
      const char* what = q.empty() ? "block-128 checkpoint" : "online";
      std::vector<int32_t> ids(static_cast<size_t>(prompt));
      for (int i = 0; i < prompt; ++i) ids[size_t(i)] = int32_t((i * 7919 + 13) % 1790);
      BackendOptions go = cuda_test_options(dir, "bfloat16", 2);
      go.quantization = q;
      BackendOptions co = go;  // the CPU backend on the same checkpoint and pages (it computes in fp32)
      co.device = "cpu";
      co.dtype = "auto";
      CpuBackend cpu(co);
      ForwardTrace trace;
      cpu.set_trace(&trace);
      std::vector<int32_t> cpu_pages;
      for (int i = 0; i < (prompt + 15) / 16; ++i) cpu_pages.push_back(i);
      ForwardBatch fb;
      fb.add(0, 0, ids, cpu_pages, true);
      const std::vector<float> want = forward_logits(cpu, fb);
      const auto off = gpu_prefill(go, ids, trace.route_ids, "0");
      ASSERT_EQ(off.size(), want.size());
      const double e_off = rel_l2(off, want);
      for (const char* mode : {"2", "3"}) {  // 3: hi alone at decode-sized launches too (W8A8)
        const auto on = gpu_prefill(go, ids, trace.route_ids, mode);
        ASSERT_EQ(on.size(), want.size());
        const double e_on = rel_l2(on, want), e_paths = rel_l2(on, off);
        std::printf("[fp8 cublas] mode %s, %s, %d-token prefill: rel L2 vs CPU %.3g (default path %.3g), between the "
                    "paths %.3g\n", mode, what, prompt, e_on, e_off, e_paths);
        const bool hi_only = prompt > kFp8TileMaxRows || mode[0] == '3';
        EXPECT_LT(e_on, hi_only ? 6e-2 : 2e-2) << what << " " << prompt << " mode " << mode;
        EXPECT_GT(e_paths, 0.0) << what << " " << prompt << " mode " << mode << ": the switch did not change the path";
      }
    }
}

}  // namespace
}  // namespace ds::gpu::test
