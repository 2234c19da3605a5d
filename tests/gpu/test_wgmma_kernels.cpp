// The Hopper wgmma prefill kernels against the mma.sync kernels they replace (the CPU twins check both
// at small shapes: test_mla_prefill.cpp's Wgmma* tests, GpuOps.MoeGroupedGemmPrefill), at the 48B
// model's real prefill shapes where a CPU reference would take minutes:
//  - MLA prefill attention, 32 heads: one 8,192-token causal sequence, and four sequences continuing
//    contexts of up to 20,000 tokens (lengths not multiples of the tiles); outputs within 2e-2 relative
//    L2 (both round P and o to bf16, in different orders; seen ~4e-3 in practice is the expectation),
//    log-sum-exp within 2e-3 absolute (fp32 on both sides); also over key windows (context pieces).
//  - MoE grouped GEMM, 4,096 tokens routed over 256 experts (top 8), gate/up 2048 x 2304 with SiLU·mul
//    and down 2304 x 1024: both launches' outputs within 2e-2 relative L2 (fp32 accumulation on both
//    sides, bf16 outputs; differences are the accumulation order).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "cuda/kernels/elementwise.h"
#include "cuda/kernels/mla_prefill.h"
#include "cuda/kernels/mla_prefill_wgmma.h"
#include "cuda/kernels/moe_gemm.h"
#include "cuda/kernels/moe_gemm_wgmma.h"
#include "cuda/kernels/moe_params.h"
#include "cuda/kernels/moe_route.h"
#include "gpu_test_util.h"

namespace ds::gpu::test {
namespace {

DeviceContext with_wgmma(int level) {
  DeviceContext c = test_ctx();
  c.switches.wgmma = level;
  return c;
}

DeviceBuffer uniform(int64_t n, DType t, uint64_t seed, float a) {
  DeviceBuffer b(std::max<size_t>(size_t(n) * dtype_size(t), 16));
  run_fill_uniform(b.data(), t, n, -a, a, seed, test_ctx());
  return b;
}

void compare_mla(const std::vector<int>& qlens, const std::vector<int>& ctx_lens, uint64_t seed, int k_begin = 0,
                 int k_end = 0) {
  DS_REQUIRE_GPU();
  ASSERT_TRUE(mla_prefill_wgmma_supported(with_wgmma(1))) << "the wgmma kernel needs an sm_90 device";
  const int H = 32;
  const DType t = DType::BF16;
  std::vector<int32_t> cuq(1, 0), cuk(1, 0);
  int max_q = 0;
  for (size_t s = 0; s < qlens.size(); ++s) {
    cuq.push_back(cuq.back() + qlens[s]);
    cuk.push_back(cuk.back() + qlens[s] + ctx_lens[s]);
    max_q = std::max(max_q, qlens[s]);
  }
  const int Tq = cuq.back(), Tk = cuk.back();
  auto q = uniform(int64_t(Tq) * H * 192, t, seed, 2.f);
  auto kv = uniform(int64_t(Tk) * H * 256, t, seed + 1, 2.f);  // per head [k_nope 128 ; v 128] (kv_b_proj output)
  auto kva = uniform(int64_t(Tk) * 576, t, seed + 2, 2.f);     // k_pe in columns [512, 576) (kv_a_proj output)
  auto dq = to_device_raw(cuq), dk = to_device_raw(cuk);
  std::vector<float> o[5], lse[5];
  for (int impl = 0; impl < 5; ++impl) {  // mma.sync, wgmma, ping-pong, and those two with TMA loads
    DeviceBuffer d_o(size_t(Tq) * H * 128 * 2), d_lse(size_t(Tq) * H * 4);
    poison(d_o);
    poison(d_lse);
    MlaPrefillParams p;
    p.q = q.data();
    p.k_nope = kv.data();
    p.ldkn = int64_t(H) * 256;
    p.hkn = 256;
    p.v = static_cast<const char*>(kv.data()) + 128 * 2;
    p.ldv = int64_t(H) * 256;
    p.hv = 256;
    p.k_pe = static_cast<const char*>(kva.data()) + 512 * 2;
    p.ldkpe = 576;
    p.o = d_o.data();
    p.lse = d_lse.as<float>();
    p.cu_seqlens_q = dq.as<int32_t>();
    p.cu_seqlens_k = dk.as<int32_t>();
    p.num_seqs = int(qlens.size());
    p.num_heads = H;
    p.max_seqlen_q = max_q;
    p.k_begin = k_begin;
    p.k_end = k_end;
    run_mla_prefill(p, t, with_wgmma(impl));
    DS_CUDA_CHECK(cudaDeviceSynchronize());
    o[impl] = to_host(d_o.data(), size_t(Tq) * H * 128, t);
    lse[impl] = to_host(d_lse.data(), size_t(Tq) * H, DType::F32);
  }
  for (int impl = 1; impl < 5; ++impl) {
    double lse_err = 0.0;
    for (size_t i = 0; i < lse[0].size(); ++i) {
      // rows that see no key of the window: -inf on both sides
      const double d = lse[0][i] == lse[impl][i] ? 0.0 : std::abs(double(lse[0][i]) - lse[impl][i]);
      lse_err = std::isnan(d) ? INFINITY : std::max(lse_err, d);
    }
    const double err = rel_l2(o[impl], o[0]);
    std::printf("[mla_prefill wgmma=%d vs mma.sync] Tq=%d Tk=%d window=[%d,%d) o_rel_l2=%.3g lse_max_abs=%.3g\n", impl,
                Tq, Tk, k_begin, k_end, err, lse_err);
    EXPECT_LE(err, 2e-2) << "wgmma=" << impl;
    EXPECT_LE(lse_err, 2e-3) << "wgmma=" << impl;
  }
}

TEST(WgmmaKernels, MlaPrefill8192Causal) { compare_mla({8192}, {0}, 11); }
TEST(WgmmaKernels, MlaPrefillVarlenWithContext) { compare_mla({2048, 1000, 77, 3001}, {0, 5000, 129, 20000}, 12); }
// Context pieces (MlaPrefillParams::k_begin / k_end): a window that ends before some sequences' queries
// (fully visible), one that overlaps the diagonal (rows before it see nothing: zeros, lse -inf), and one
// past a short sequence's keys.
TEST(WgmmaKernels, MlaPrefillKeyWindows) {
  compare_mla({2048, 1000, 77, 3001}, {0, 5000, 129, 20000}, 13, 1000, 5000);
  compare_mla({2048, 1000, 77, 3001}, {0, 5000, 129, 20000}, 14, 4100, 0);
  compare_mla({700}, {300}, 15, 0, 333);
}

TEST(WgmmaKernels, MoeGroupedGemmRealShapes) {
  DS_REQUIRE_GPU();
  const int T = 4096, E = 256, k = 8, D = 2304, I = 1024, pairs = T * k;
  const DType t = DType::BF16;
  auto gu = uniform(int64_t(E) * 2 * I * D, t, 21, 0.05f);
  auto dn = uniform(int64_t(E) * D * I, t, 22, 0.05f);
  auto x = uniform(int64_t(T) * D, t, 23, 1.f);
  auto logits = uniform(int64_t(T) * E, DType::F32, 24, 3.f);
  DeviceBuffer bias(size_t(E) * 4), ids(size_t(pairs) * 4), w(size_t(pairs) * 4), pp(size_t(pairs) * 4),
      st(size_t(pairs) * 4), se(size_t(E) * 4), ss(size_t(E + 1) * 4), na(4);
  DS_CUDA_CHECK(cudaMemset(bias.data(), 0, bias.bytes()));
  const MoeRouteParams r{.logits = logits.as<float>(),
                         .bias = bias.as<float>(),
                         .topk_ids = ids.as<int32_t>(),
                         .topk_weights = w.as<float>(),
                         .tokens = T,
                         .num_experts = E,
                         .top_k = k,
                         .scale = 2.446f};
  const MoeAlignParams a = moe_align_params(r, {.pair_pos = pp.as<int32_t>(),
                                                .sorted_token = st.as<int32_t>(),
                                                .active_expert = se.as<int32_t>(),
                                                .active_start = ss.as<int32_t>(),
                                                .num_active = na.as<int32_t>()});
  run_moe_route_align(r, a, test_ctx());
  std::vector<float> act[3], out[3];
  for (int impl = 0; impl < 3; ++impl) {  // mma.sync, wgmma, wgmma with the weight tiles by TMA
    DeviceContext ctx = with_wgmma(impl > 0 ? 1 : 0);
    ctx.switches.moe_tma = impl == 2;
    DeviceBuffer dact(size_t(pairs) * I * 2), dout(size_t(pairs) * D * 2);
    poison(dact);
    poison(dout);
    const MoeGemmParams g = moe_gate_up_gemm_params(a, x.data(), D, gu.data(), D, I, dact.data(), 64);
    const MoeGemmParams d = moe_down_gemm_params(g, dn.data(), dout.data(), D);
    if (impl >= 1) {
      ASSERT_TRUE(moe_gemm_wgmma_supported(g, ctx));
      ASSERT_TRUE(moe_gemm_wgmma_supported(d, ctx));
    }
    run_moe_gemm(g, ctx);
    run_moe_gemm(d, ctx);
    DS_CUDA_CHECK(cudaDeviceSynchronize());
    act[impl] = to_host(dact.data(), size_t(pairs) * I, t);
    out[impl] = to_host(dout.data(), size_t(pairs) * D, t);
  }
  for (int impl = 1; impl < 3; ++impl) {
    const double e_act = rel_l2(act[impl], act[0]), e_out = rel_l2(out[impl], out[0]);
    std::printf("[moe_gemm wgmma%s vs mma.sync] T=%d gate_up rel_l2=%.3g down rel_l2=%.3g\n", impl == 2 ? " TMA" : "", T,
                e_act, e_out);
    EXPECT_LE(e_act, 2e-2) << "impl " << impl;
    EXPECT_LE(e_out, 2e-2) << "impl " << impl;
  }
  // the two wgmma forms sum the same products in the same order: equal
  EXPECT_EQ(act[2], act[1]);
  EXPECT_EQ(out[2], out[1]);
}

}  // namespace
}  // namespace ds::gpu::test
