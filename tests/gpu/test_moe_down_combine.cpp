// The batch-1 MoE down projection + weighted combine (run_moe_down_combine) against a float64 CPU sum:
//   residual[c] += sum_j weights[j] * W[ids[j]][c, :] . act[pair_pos[j], :]
// in bf16 and fp32. Shapes: the real one (D 2304, I 1024, 9 pairs), an odd D, I beyond one round of
// loads (2056: a partial last round), I of one chunk, and one pair; each with and without a pair whose
// expert is given up front (known_pair: its weights read before the kernel waits); the per-pair kernel and the
// staged one (switches.down_combine_staged: bf16 in rounds of columns, I 2,056 of 4 KiB rows, D 2,312 a last block
// short of its columns). Then the staged
// one-token gate/up of bf16 experts.
#include <gtest/gtest.h>

#include <cmath>

#include "cuda/kernels/gemv.h"
#include "gpu_test_util.h"
#include "one_token_gate_up.h"

namespace ds::gpu::test {
namespace {

TEST(GpuOps, MoeDownCombineMatchesCpu) {
  DS_REQUIRE_GPU();
  struct Case {
    int D, I, k;
  };
  for (const bool staged : {false, true})
  for (Case cs : {Case{2304, 1024, 9}, Case{7, 1024, 9}, Case{2304, 2056, 3}, Case{130, 520, 1}, Case{2304, 8, 9},
                  Case{2312, 1024, 9}})  // (2,312: the staged form's last block short of its columns)
    for (DType t : {DType::BF16, DType::F32})
    for (bool known : {false, true}) {
      DeviceContext ctx = test_ctx();
      ctx.switches.down_combine_staged = staged;  // (the staged kernel: bf16 activations; fp32 runs the per-pair one)
      const int G = 12;  // weight groups (experts)
      const auto w = rounded(randn(size_t(G) * cs.D * cs.I, 91, 0.05f), t);
      const auto act = rounded(randn(size_t(cs.k + 2) * cs.I, 92), t);  // rows beyond the pairs' too
      const auto resid = rounded(randn(size_t(cs.D), 93), t);
      std::vector<int32_t> ids(size_t(cs.k)), pos(size_t(cs.k));
      std::vector<float> wt(size_t(cs.k));
      for (int j = 0; j < cs.k; ++j) {
        ids[size_t(j)] = (5 * j + 3) % G;
        pos[size_t(j)] = (j + 1) % (cs.k + 2);  // not the identity
        wt[size_t(j)] = 0.25f + 0.1f * float(j);
      }
      auto dw = to_device(w, t), da = to_device(act, t), dres = to_device(resid, t);
      auto dids = to_device_raw(ids), dpos = to_device_raw(pos);
      auto dwt = to_device(wt, DType::F32);
      MoeDownCombineParams p;
      p.act = da.data();
      p.pair_pos = dpos.as<int32_t>();
      p.ids = dids.as<int32_t>();
      p.weights = dwt.as<float>();
      p.w = dw.data();
      p.residual = dres.data();
      p.D = cs.D;
      p.I = cs.I;
      p.k = cs.k;
      if (known) {
        p.known_pair = cs.k - 1;
        p.known_expert = ids[size_t(cs.k - 1)];
      }
      // the staged kernel takes every bf16 case here (its fallback is the per-pair kernel: a silent decline would
      // test that one twice)
      EXPECT_EQ(moe_down_combine_staged_applies(p, t, ctx), staged && t == DType::BF16) << "D " << cs.D << " I " << cs.I;
      run_moe_down_combine(p, t, ctx);
      DS_CUDA_CHECK(cudaDeviceSynchronize());
      const auto got = to_host(dres.data(), size_t(cs.D), t);
      std::vector<float> want(size_t(cs.D));
      for (int c = 0; c < cs.D; ++c) {
        double s = 0;
        for (int j = 0; j < cs.k; ++j) {
          const float* wr = w.data() + (size_t(ids[size_t(j)]) * cs.D + c) * cs.I;
          const float* x = act.data() + size_t(pos[size_t(j)]) * cs.I;
          double d = 0;
          for (int i = 0; i < cs.I; ++i) d += double(wr[i]) * x[i];
          s += double(wt[size_t(j)]) * d;
        }
        want[size_t(c)] = float(resid[size_t(c)] + s);
      }
      // fp32: summation order only; bf16: the output rounding (2^-9 relative) dominates
      EXPECT_LT(rel_l2(got, want), t == DType::BF16 ? 4e-3 : 1e-5)
          << "D " << cs.D << " I " << cs.I << " k " << cs.k << " " << dtype_name(t) << " known " << known
          << (staged ? " staged" : "");
    }
}


// One token's MoE gate/up (SiLU-mul) with bf16 experts on the staged kernel (moe_gate_up_staged.cu,
// switches.gate_up_staged): the one-token layout (a group a pair, one row each), the RMSNorm fused, all 9 groups
// active and 4; against the host and the per-row-pair GEMV of the same launch (the switch off). fp32 activations
// do not apply (the per-row-pair GEMV runs).
TEST(GpuOps, StagedGateUpBf16OneToken) {
  DS_REQUIRE_GPU();
  const DType bf = DType::BF16;
  const int E = 10, K = 2304, N = 512;
  const OneTokenGateUp tok({9, 0, 3, 7, 1, 5, 8, 2, 4}, N, K, bf, 402);
  const auto w = rounded(randn(size_t(E) * 2 * N * K, 401, 0.05f), bf);
  auto dw = to_device(w, bf);
  for (int active : {tok.groups(), 4}) {
    auto dact = to_device_raw(std::vector<int32_t>{active});
    GemvParams p = tok.params(dact);
    p.w = dw.data();
    DeviceContext on = test_ctx();
    on.switches.gate_up_staged = true;
    EXPECT_FALSE(moe_gate_up_staged_applies(p, DType::F32, on));  // bf16 weights: bf16 activations only
    std::vector<float> outs[2];
    tok.run_both(p, test_ctx(), tok.want(w.data(), active), active, 2e-2, "bf16", outs);
    EXPECT_LT(rel_l2(outs[1], outs[0]), 2e-2) << "active " << active << " staged against the per-row-pair GEMV";
  }
}
}  // namespace
}  // namespace ds::gpu::test
