// The FP8 GEMV on the tensor cores (gemv_fp8_mma.cu, switches.fp8_mma_gemv): one row per group, bf16
// activations, against the CPU GEMM on the dequantized weights (and the x rows rounded to bf16) and against
// the CUDA-core FP8 GEMV of the same launch (the switch off): every epilogue, per-channel and 128 x 128 block
// scales, K of 1,024 / 2,304 / 4,096, a partial 16-column tile, grouped launches (weights by group, rows by
// group_start, a gather, inactive groups, the early-weights hint) and the fused RMSNorm; a 32-wide scale
// block does not apply and runs the CUDA-core GEMV. The MoE down projection + combine on the same MMAs.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <tuple>
#include <utility>

#include "cuda/kernels/gemv.h"
#include "fp8_host.h"
#include "gemm_ref.h"
#include "gpu_test_util.h"
#include "one_token_gate_up.h"

namespace ds::gpu::test {
namespace {

DeviceContext mma_ctx(bool on) {
  DeviceContext ctx = test_ctx();
  ctx.switches.fp8_mma_gemv = on ? 1 : 0;
  return ctx;
}
// The subset mode (DELTASERVE_CUDA_FP8_MMA_GEMV=2): only SiLU-mul launches and those with N >= K.
DeviceContext subset_ctx() {
  DeviceContext ctx = test_ctx();
  ctx.switches.fp8_mma_gemv = 2;
  return ctx;
}

// Dense, one row: Store (bf16 and fp32 out), Accumulate, SiluMul, against the host and the switch off.
TEST(GpuFp8Mma, DenseEpiloguesAndLayouts) {
  DS_REQUIRE_GPU();
  const DType bf = DType::BF16;
  struct Layout {
    int rs, ks;
    const char* name;
  };
  for (const Layout& L : {Layout{0, 31, "channel"}, Layout{7, 7, "block128"}})
    for (int K : {1024, 2304, 4096}) {
      const int N = 392;  // 24.5 tiles of 16: the last one partial
      const auto w = random_fp8(1, 2 * N, K, L.rs, L.ks, 7 + K);
      auto dq = to_device_raw(w.q), ds = to_device_raw(w.scale);
      const auto x = rounded(randn(size_t(K), 8 + K), bf);
      auto dx = to_device(x, bf);
      const auto ref = cpu_gemm(x, K, w.dq, 1, 2 * N, K);  // [gate; up] rows for SiluMul
      const std::string tag = std::string(L.name) + " K=" + std::to_string(K);
      GemvParams p;
      p.x = dx.data();
      p.ldx = K;
      set_fp8(p, w, dq, ds);
      p.N = 2 * N;
      p.K = K;
      p.M = 1;
      ASSERT_TRUE(fp8_mma_gemv_applies(p, bf, mma_ctx(true))) << tag;
      EXPECT_FALSE(fp8_mma_gemv_applies(p, bf, mma_ctx(false))) << tag;
      EXPECT_EQ(fp8_mma_gemv_applies(p, bf, subset_ctx()), 2 * N >= K) << tag;  // Store: N >= K only
      {
        GemvParams s = p;
        s.epi = GemvEpilogue::SiluMul;
        s.N = N;
        EXPECT_TRUE(fp8_mma_gemv_applies(s, bf, subset_ctx())) << tag;
      }
      std::vector<float> outs[2];
      for (const bool on : {false, true}) {  // Store, fp32 output
        DeviceBuffer dy(size_t(2) * N * 4);
        poison(dy);
        p.y = dy.data();
        p.ldy = 2 * N;
        p.y_f32 = true;
        run_gemv(p, bf, mma_ctx(on));
        outs[on] = to_host(dy.data(), ref.size(), DType::F32);
        // (the FP8 tensor cores' sums keep fewer bits than fp32, DeepGEMM's reason to promote per k block:
        // 1e-3, still two orders under the bf16 output rounding)
        EXPECT_LT(rel_l2(outs[on], ref), on ? 1e-3 : 1e-5) << tag << (on ? " mma" : " cuda cores") << " fp32 out";
        p.y_f32 = false;
      }
      EXPECT_LT(rel_l2(outs[1], outs[0]), 1e-3) << tag << " mma against the cuda cores";
      {  // Store, bf16 output
        DeviceBuffer dy(size_t(2) * N * 2);
        poison(dy);
        p.y = dy.data();
        run_gemv(p, bf, mma_ctx(true));
        EXPECT_LT(rel_l2(to_host(dy.data(), ref.size(), bf), ref), tol(bf)) << tag << " bf16 out";
      }
      {  // Accumulate into a residual
        const auto r0 = rounded(randn(size_t(2) * N, 9 + K), bf);
        auto dr = to_device(r0, bf);
        p.y = dr.data();
        p.epi = GemvEpilogue::Accumulate;
        run_gemv(p, bf, mma_ctx(true));
        auto want = ref;
        for (size_t i = 0; i < want.size(); ++i) want[i] += r0[i];
        EXPECT_LT(rel_l2(to_host(dr.data(), want.size(), bf), want), tol(bf)) << tag << " accumulate";
        p.epi = GemvEpilogue::Store;
      }
      {  // SiluMul: rows [0, N) gate, [N, 2N) up
        DeviceBuffer dy(size_t(N) * 2);
        poison(dy);
        p.y = dy.data();
        p.ldy = N;
        p.N = N;
        p.epi = GemvEpilogue::SiluMul;
        ASSERT_TRUE(fp8_mma_gemv_applies(p, bf, mma_ctx(true))) << tag;
        run_gemv(p, bf, mma_ctx(true));
        const auto want = silu_mul_rows(ref, 1, N);
        EXPECT_LT(rel_l2(to_host(dy.data(), want.size(), bf), want), 2 * tol(bf)) << tag << " silu_mul";
      }
    }
}

// Grouped as the batch-1 MoE runs it: SiLU-mul, weights by group, one row per group by group_start from a
// gather, groups past num_active untouched; then with the early-weights hint for group 1.
TEST(GpuFp8Mma, GroupedSiluMulGather) {
  DS_REQUIRE_GPU();
  const DType bf = DType::BF16;
  const int G = 6, N = 256, K = 2304, Trows = 4;
  const std::vector<int32_t> slot_weight = {5, 0, 2, 1, 3};
  const std::vector<int32_t> slot_start = {0, 1, 2, 3, 4, 5};
  const std::vector<int32_t> rows = {2, 0, 3, 1, 1};
  const int active = 3;
  const auto w = random_fp8(G, 2 * N, K, 7, 7, 61);
  auto dq = to_device_raw(w.q), ds = to_device_raw(w.scale);
  const auto x = rounded(randn(size_t(Trows) * K, 62), bf);
  auto dx = to_device(x, bf);
  auto dsw = to_device_raw(slot_weight), dss = to_device_raw(slot_start), drows = to_device_raw(rows);
  const std::vector<int32_t> na = {active};
  auto dna = to_device_raw(na);
  const std::vector<int32_t> sw(slot_weight.begin(), slot_weight.begin() + active);
  const std::vector<int32_t> ss(slot_start.begin(), slot_start.begin() + active + 1);
  const auto gu = grouped_reference(x, w.dq, 2 * N, K, sw, ss, rows);
  const auto want = silu_mul_rows(gu, active, N);
  for (const int known : {-1, 1}) {
    DeviceBuffer dy(size_t(slot_start.back()) * N * 2);
    poison(dy);
    GemvParams p;
    p.x = dx.data();
    p.ldx = K;
    p.x_rows = drows.as<int32_t>();
    set_fp8(p, w, dq, ds);
    p.w_matrix_stride = int64_t(2) * N * K;
    p.y = dy.data();
    p.ldy = N;
    p.N = N;
    p.K = K;
    p.num_groups = int(slot_weight.size());
    p.group_weight = dsw.as<int32_t>();
    p.group_start = dss.as<int32_t>();
    p.num_active = dna.as<int32_t>();
    p.max_rows = 1;
    p.known_group = known;
    p.known_weight = known >= 0 ? slot_weight[size_t(known)] : -1;
    p.epi = GemvEpilogue::SiluMul;
    ASSERT_TRUE(fp8_mma_gemv_applies(p, bf, mma_ctx(true)));
    DeviceContext staged = mma_ctx(true);  // (the staged one-token kernel reads one row: these are 4 tokens')
    staged.switches.gate_up_staged = true;
    EXPECT_FALSE(moe_gate_up_staged_applies(p, bf, staged));
    run_gemv(p, bf, mma_ctx(true));
    const auto got = to_host(dy.data(), size_t(slot_start.back()) * N, bf);
    const std::vector<float> got_active(got.begin(), got.begin() + int64_t(active) * N);
    EXPECT_LT(rel_l2(got_active, want), 2 * tol(bf)) << "known group " << known;
    for (size_t i = size_t(active) * N; i < got.size(); ++i)
      ASSERT_TRUE(std::isnan(got[i])) << "inactive group row written at " << i;
  }
}

// The fused RMSNorm prologue (x <- round(rmsnorm(x) * w)) before the product; and a 32-wide scale block,
// which the tensor-core GEMV declines (the CUDA-core GEMV runs, still right).
TEST(GpuFp8Mma, FusedNormAndDeclinedLayout) {
  DS_REQUIRE_GPU();
  const DType bf = DType::BF16;
  const int N = 512, K = 2304;
  const float eps = 1e-6f;
  const auto x = rounded(randn(size_t(K), 71, 3.f), bf);
  const auto nw = rounded(randn(size_t(K), 72, 0.5f), bf);
  double ss = 0;
  for (float v : x) ss += double(v) * v;
  const float inv = 1.f / std::sqrt(float(ss / K) + eps);
  std::vector<float> xn(static_cast<size_t>(K));
  for (int k = 0; k < K; ++k) xn[size_t(k)] = x[size_t(k)] * inv * nw[size_t(k)];
  xn = rounded(xn, bf);
  auto dx = to_device(x, bf), dnw = to_device(nw, bf);
  for (auto [rs, ks, applies] : {std::tuple{7, 7, true}, std::tuple{5, 5, false}}) {
    const auto w = random_fp8(1, N, K, rs, ks, 73 + ks);
    auto dq = to_device_raw(w.q), ds = to_device_raw(w.scale);
    DeviceBuffer dy(size_t(N) * 2);
    poison(dy);
    GemvParams p;
    p.x = dx.data();
    p.ldx = K;
    p.norm_weight = dnw.data();
    p.norm_eps = eps;
    set_fp8(p, w, dq, ds);
    p.y = dy.data();
    p.ldy = N;
    p.N = N;
    p.K = K;
    p.M = 1;
    EXPECT_EQ(fp8_mma_gemv_applies(p, bf, mma_ctx(true)), applies) << "block " << (1 << ks);
    run_gemv(p, bf, mma_ctx(true));
    const auto ref = cpu_gemm(xn, K, w.dq, 1, N, K);
    EXPECT_LT(rel_l2(to_host(dy.data(), ref.size(), bf), ref), tol(bf)) << "block " << (1 << ks);
  }
}

// One token's MoE down projection + combine: pairs gather their activation rows and their experts' matrices
// (one expert twice), the weighted sum added to the residual; a partial last tile of 16 columns. Against the
// host and the CUDA-core kernel (the switch off); then the staged CUDA-core kernel (moe_down_combine_staged.cu).
TEST(GpuFp8Mma, DownCombine) {
  DS_REQUIRE_GPU();
  const DType bf = DType::BF16;
  const int E = 10, D = 2312, I = 1024, k = 9, rows = 12;
  const std::vector<int32_t> pair_pos = {3, 0, 7, 11, 5, 2, 9, 1, 4};
  const std::vector<int32_t> ids = {9, 0, 3, 3, 7, 1, 5, 8, 2};
  const auto wts = randu(size_t(k), 81, 0.1f, 1.f);
  const auto act = rounded(randn(size_t(rows) * I, 82), bf);
  const auto r0 = rounded(randn(size_t(D), 83, 0.1f), bf);
  auto dact = to_device(act, bf), dpos = to_device_raw(pair_pos), dids = to_device_raw(ids);
  auto dwts = to_device(wts, DType::F32);
  for (auto [rs, ks] : {std::pair{0, 31}, std::pair{7, 7}}) {
    const auto w = random_fp8(E, D, I, rs, ks, 84 + ks);
    auto dq = to_device_raw(w.q), dsc = to_device_raw(w.scale);
    std::vector<float> want(r0.begin(), r0.end());
    for (int j = 0; j < k; ++j)
      for (int c = 0; c < D; ++c) {
        double acc = 0;
        const float* wr = w.dq.data() + (int64_t(ids[size_t(j)]) * D + c) * I;
        const float* xr = act.data() + int64_t(pair_pos[size_t(j)]) * I;
        for (int i = 0; i < I; ++i) acc += double(wr[i]) * xr[i];
        want[size_t(c)] += float(wts[size_t(j)] * acc);
      }
    MoeDownCombineParams p;
    p.act = dact.data();
    p.pair_pos = dpos.as<int32_t>();
    p.ids = dids.as<int32_t>();
    p.weights = dwts.as<float>();
    p.w = dq.data();
    p.D = D;
    p.I = I;
    p.k = k;
    p.w_scale = dsc.as<float>();
    p.scale_ld = w.ld;
    p.scale_row_shift = rs;
    p.scale_k_shift = ks;
    p.scale_matrix_stride = w.scale_rows() * w.ld;
    ASSERT_TRUE(fp8_mma_down_combine_applies(p, bf, mma_ctx(true))) << "rs " << rs;
    EXPECT_FALSE(fp8_mma_down_combine_applies(p, bf, mma_ctx(false)));
    EXPECT_FALSE(fp8_mma_down_combine_applies(p, bf, subset_ctx()));  // (slower alone: not in the subset)
    std::vector<float> outs[2];
    for (const bool on : {false, true}) {
      auto dr = to_device(r0, bf);
      p.residual = dr.data();
      run_moe_down_combine(p, bf, mma_ctx(on));
      outs[on] = to_host(dr.data(), size_t(D), bf);
      EXPECT_LT(rel_l2(outs[on], want), tol(bf)) << "rs " << rs << (on ? " mma" : " cuda cores");
    }
    EXPECT_LT(rel_l2(outs[1], outs[0]), tol(bf)) << "rs " << rs << " mma against the cuda cores";
    {  // the staged CUDA-core kernel (switches.down_combine_staged): 18 columns a block, 129 blocks
      DeviceContext staged = mma_ctx(false);
      staged.switches.down_combine_staged = true;
      ASSERT_TRUE(moe_down_combine_staged_applies(p, bf, staged)) << "rs " << rs;
      auto dr = to_device(r0, bf);
      p.residual = dr.data();
      run_moe_down_combine(p, bf, staged);
      const auto got = to_host(dr.data(), size_t(D), bf);
      EXPECT_LT(rel_l2(got, want), tol(bf)) << "rs " << rs << " staged";
      EXPECT_LT(rel_l2(got, outs[0]), tol(bf)) << "rs " << rs << " staged against the per-pair kernel";
    }
  }
}


// One token's MoE gate/up (SiLU-mul) on the staged kernel (moe_gate_up_staged.cu, switches.gate_up_staged): the
// one-token layout (a group a pair, one row each, every row the token), the layer's RMSNorm fused, per-channel
// and 128 x 128 block scales, all groups active and 6 of 9 (the rest's output rows untouched); against the host
// on the dequantized weights and against the per-row-pair GEMV of the same launch (the switch off).
TEST(GpuFp8Staged, GateUpOneToken) {
  DS_REQUIRE_GPU();
  const DType bf = DType::BF16;
  const int E = 12, K = 2304, N = 1024;
  const OneTokenGateUp tok({9, 0, 3, 7, 1, 5, 8, 2, 11}, N, K, bf, 181);
  for (auto [rs, ks] : {std::pair{0, 31}, std::pair{7, 7}})
    for (int active : {tok.groups(), 6}) {
      const auto w = random_fp8(E, 2 * N, K, rs, ks, 190 + ks);
      auto dq = to_device_raw(w.q), dsc = to_device_raw(w.scale);
      auto dact = to_device_raw(std::vector<int32_t>{active});
      GemvParams p = tok.params(dact);
      p.w = dq.data();
      p.w_scale = dsc.as<float>();
      p.scale_ld = w.ld;
      p.scale_row_shift = rs;
      p.scale_k_shift = ks;
      p.scale_matrix_stride = w.scale_rows() * w.ld;
      std::vector<float> outs[2];
      tok.run_both(p, mma_ctx(false), tok.want(w.dq.data(), active), active, 2 * tol(bf), "rs " + std::to_string(rs), outs);
      EXPECT_LT(rel_l2(outs[1], outs[0]), 2 * tol(bf)) << "rs " << rs << " staged against the per-row-pair GEMV";
    }
}
}  // namespace
}  // namespace ds::gpu::test
