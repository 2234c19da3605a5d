// MLA prefill flash attention against the CPU twin (run_mla_prefill_cpu, fp32), varlen, with and
// without earlier context, reading k_nope / v / k_pe through the strides of the real buffers
// (kv_b_proj output [T, H, 256] and kv_a_proj output [T, 576]).
//
// Tolerances (relative L2 per sequence):
//  - fp32, 1e-5: 3xTF32 products, ex2.approx (2^-22), fp32 online softmax and accumulation.
//  - bf16, 1e-2: q, k, v rounded to bf16 for both sides; the kernel also rounds P to bf16 (2^-9) for
//    P·V and writes o in bf16 (2^-9).
//  - lse (the optional log-sum-exp output), 1e-3 absolute against a float64 sum over the same inputs: the
//    scores are fp32 products of exact inputs; ex2.approx and the fp32 sums add ~1e-6 relative.
// The Wgmma* tests run the same checks on the Hopper wgmma kernel (DeviceContext::switches.wgmma).
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "cuda/kernels/mla_prefill.h"
#include "cuda/kernels/mla_prefill_wgmma.h"
#include "kernels/mla/op.h"
#include "test_mla_util.h"

namespace ds::attn_test {
namespace {

constexpr int kQk = 192, kV = 128;

void expect_prefill(const std::vector<int>& qlens, const std::vector<int>& ctx, int H, DType act, uint64_t seed,
                    int wgmma = 0) {
  gpu::DeviceContext dctx = test_ctx();
  dctx.switches.wgmma = wgmma;
  if (wgmma) {
    ASSERT_TRUE(gpu::mla_prefill_wgmma_supported(dctx)) << "the wgmma kernel needs an sm_90 device";
  }
  std::mt19937_64 rng(seed);
  const int N = int(qlens.size());
  std::vector<int32_t> cuq(1, 0), cuk(1, 0);
  int max_q = 0;
  for (int s = 0; s < N; ++s) {
    cuq.push_back(cuq.back() + qlens[s]);
    cuk.push_back(cuk.back() + qlens[s] + ctx[s]);
    max_q = std::max(max_q, qlens[s]);
  }
  const int Tq = cuq.back(), Tk = cuk.back();
  Act q = make_act(normal(size_t(Tq) * H * kQk, rng), act);
  Act kv = make_act(normal(size_t(Tk) * H * 256, rng), act);  // per head [k_nope 128 ; v 128]
  Act kva = make_act(normal(size_t(Tk) * 576, rng), act);     // k_pe in columns [512, 576)
  const float scale = float(1.0 / std::sqrt(192.0));

  std::vector<float> ref_o(size_t(Tq) * H * kV);
  std::vector<double> ref_lse(size_t(Tq) * H);
  for (int s = 0; s < N; ++s) {
    const int klen = cuk[s + 1] - cuk[s];
    std::vector<float> k, v;
    expanded_keys(kv.host, kva.host, cuk[s], klen, H, k, v);
    kernels::MlaPrefillParams rp;
    rp.q = q.host.data() + size_t(cuq[s]) * H * kQk;
    rp.k = k.data();
    rp.v = v.data();
    rp.o = ref_o.data() + size_t(cuq[s]) * H * kV;
    rp.Tq = qlens[s];
    rp.Tk = klen;
    rp.H = H;
    rp.Dqk = kQk;
    rp.Dv = kV;
    rp.q_pos0 = ctx[s];
    rp.scale = scale;
    kernels::run_mla_prefill_cpu(rp);
    for (int i = 0; i < qlens[s]; ++i)  // ln Σ_{j <= position} exp(scale q·k_j), in float64
      for (int h = 0; h < H; ++h) {
        const float* qi = q.host.data() + (size_t(cuq[s] + i) * H + h) * kQk;
        std::vector<double> sc(size_t(ctx[s] + i + 1));
        double mx = -1e300;
        for (size_t j = 0; j < sc.size(); ++j) {
          const float* kj = k.data() + (j * H + h) * kQk;
          double d = 0.0;
          for (int c = 0; c < kQk; ++c) d += double(qi[c]) * kj[c];
          sc[j] = d * scale;
          mx = std::max(mx, sc[j]);
        }
        double sum = 0.0;
        for (double x : sc) sum += std::exp(x - mx);
        ref_lse[size_t(cuq[s] + i) * H + h] = mx + std::log(sum);
      }
  }

  auto d_cuq = upload(cuq), d_cuk = upload(cuk);
  auto d_o = poisoned(ref_o.size(), act);
  auto d_lse = poisoned(ref_lse.size(), DType::F32);
  gpu::MlaPrefillParams p = expanded_params(q, kv, kva, H, act);
  p.o = d_o.data();
  p.cu_seqlens_q = d_cuq.as<int32_t>();
  p.cu_seqlens_k = d_cuk.as<int32_t>();
  p.num_seqs = N;
  p.max_seqlen_q = max_q;
  p.lse = d_lse.as<float>();
  gpu::run_mla_prefill(p, act, dctx);
  DS_CUDA_CHECK(cudaDeviceSynchronize());
  const auto o = download_act(d_o, ref_o.size(), act);
  double worst = 0.0;
  for (int s = 0; s < N; ++s) {
    const size_t off = size_t(cuq[s]) * H * kV, n = size_t(qlens[s]) * H * kV;
    worst = std::max(worst, rel_l2(o.data() + off, ref_o.data() + off, n));
  }
  const auto lse = download_act(d_lse, ref_lse.size(), DType::F32);
  double lse_err = 0.0;
  for (size_t i = 0; i < lse.size(); ++i) lse_err = std::max(lse_err, std::abs(double(lse[i]) - ref_lse[i]));
  std::printf("[mla_prefill wgmma=%d] act=%s H=%d q=%s ctx=%s o_err=%.3g lse_err=%.3g\n", wgmma, act_name(act),
              H, lens_str(qlens).c_str(), lens_str(ctx).c_str(), worst, lse_err);
  EXPECT_LE(worst, act == DType::F32 ? 1e-5 : 1e-2);
  EXPECT_LE(lse_err, 1e-3);
}

}  // namespace

TEST(MlaPrefill, VarlenF32) { expect_prefill({1, 70, 200, 64}, {0, 0, 0, 0}, 4, DType::F32, 51); }
TEST(MlaPrefill, VarlenBf16) { expect_prefill({1, 70, 200, 64}, {0, 0, 0, 0}, 4, DType::BF16, 52); }
// Chunks that continue a sequence: keys = context (earlier chunks, expanded) + the chunk itself.
TEST(MlaPrefill, WithContextF32) { expect_prefill({1, 70, 130}, {5, 64, 129}, 4, DType::F32, 53); }
TEST(MlaPrefill, WithContextBf16) { expect_prefill({1, 70, 130}, {5, 64, 129}, 4, DType::BF16, 54); }
TEST(MlaPrefill, RealHeadsBf16) { expect_prefill({300, 45}, {0, 200}, 32, DType::BF16, 55); }
TEST(MlaPrefill, RealHeadsF32) { expect_prefill({300, 45}, {0, 200}, 32, DType::F32, 56); }
// The Hopper wgmma kernel (bf16), both schedules, cp.async or TMA loads (switches.wgmma 1..4): query tiles
// of 128, key tiles of 128, partial tiles at both ends, warpgroups with no rows.
TEST(MlaPrefill, WgmmaVarlenBf16) {
  for (int v : {1, 2, 3, 4}) expect_prefill({1, 70, 200, 64, 128, 129}, {0, 0, 0, 0, 0, 0}, 4, DType::BF16, 57, v);
}
TEST(MlaPrefill, WgmmaWithContextBf16) {
  for (int v : {1, 2, 3, 4}) expect_prefill({1, 70, 130, 300}, {5, 64, 129, 1000}, 4, DType::BF16, 58, v);
}
TEST(MlaPrefill, WgmmaRealHeadsBf16) {
  for (int v : {1, 2, 3, 4}) expect_prefill({300, 45}, {0, 200}, 32, DType::BF16, 59, v);
}

}  // namespace ds::attn_test
