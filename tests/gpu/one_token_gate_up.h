// The one-token MoE gate/up launch of the staged gate/up tests (moe_gate_up_staged.cu, switches.gate_up_staged;
// test_gemv_fp8_mma.cpp, test_int4.cpp, test_moe_down_combine.cpp): a group a pair, one row each, every row the
// token, the layer's RMSNorm fused; the host's reference on the dequantized weights; the launch with the switch
// off (the per-row-pair GEMV) and on.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "cuda/kernels/gemv.h"
#include "gpu_test_util.h"

namespace ds::gpu::test {

struct OneTokenGateUp {
  static constexpr float kEps = 1e-6f, kSentinel = 7.f;
  int N, K;
  DType t;
  std::vector<int32_t> mats;          // the weight matrix of each group
  std::vector<float> x, nw, xn;       // the token's row, the norm weight, the normalised row (rounded to t)
  DeviceBuffer dx, dnw, dmats, dstarts, drows;

  OneTokenGateUp(std::vector<int32_t> mats_, int N_, int K_, DType t_, uint64_t seed)
      : N(N_), K(K_), t(t_), mats(std::move(mats_)) {
    const int G = groups();
    x = rounded(randn(size_t(K), seed), t);
    nw = rounded(randu(size_t(K), seed + 1, 0.5f, 1.5f), t);
    double ss = 0;
    for (float v : x) ss += double(v) * v;
    const float inv = 1.f / std::sqrt(float(ss / K) + kEps);
    xn.resize(size_t(K));
    for (int k = 0; k < K; ++k) xn[size_t(k)] = x[size_t(k)] * inv * nw[size_t(k)];
    xn = rounded(xn, t);  // as the fused prologue writes it
    std::vector<int32_t> starts(size_t(G) + 1), rows(size_t(G), 0);
    for (int g = 0; g <= G; ++g) starts[size_t(g)] = g;
    dx = to_device(x, t);
    dnw = to_device(nw, t);
    dmats = to_device_raw(mats);
    dstarts = to_device_raw(starts);
    drows = to_device_raw(rows);
  }
  int groups() const { return int(mats.size()); }

  // [G, N]: silu(gate_i . xn) * (up_i . xn) of the first `active` groups, from weights dq [matrices][2N][K];
  // kSentinel in the other groups' rows.
  std::vector<float> want(const float* dq, int active) const {
    std::vector<float> y(size_t(groups()) * N, kSentinel);
    for (int g = 0; g < active; ++g)
      for (int i = 0; i < N; ++i) {
        double a = 0, b = 0;
        const float* wg = dq + (int64_t(mats[size_t(g)]) * 2 * N + i) * K;
        const float* wu = wg + int64_t(N) * K;
        for (int k = 0; k < K; ++k) {
          a += double(wg[k]) * xn[size_t(k)];
          b += double(wu[k]) * xn[size_t(k)];
        }
        y[size_t(g) * N + size_t(i)] = float(a / (1.0 + std::exp(-a)) * b);
      }
    return y;
  }

  // The launch, all but its weights and output; *dactive the active groups.
  GemvParams params(const DeviceBuffer& dactive) const {
    GemvParams p;
    p.x = dx.data();
    p.ldx = K;
    p.x_rows = drows.as<int32_t>();
    p.w_matrix_stride = int64_t(2) * N * K;
    p.N = N;
    p.K = K;
    p.num_groups = groups();
    p.group_weight = dmats.as<int32_t>();
    p.group_start = dstarts.as<int32_t>();
    p.num_active = dactive.as<int32_t>();
    p.max_rows = 1;
    p.x_row_shared = true;  // (every row the token's)
    p.epi = GemvEpilogue::SiluMul;
    p.norm_weight = dnw.data();
    p.norm_eps = kEps;
    p.ldy = N;
    return p;
  }

  // p (weights set) with the switch off (outs[0]) and on (outs[1]), from `base`: the staged kernel applies only
  // with it; both outputs within tol of want; the inactive groups' rows untouched.
  void run_both(GemvParams p, const DeviceContext& base, const std::vector<float>& want, int active, double tol,
                const std::string& tag, std::vector<float> (&outs)[2]) const {
    DeviceContext on = base, off = base;
    on.switches.gate_up_staged = true;
    off.switches.gate_up_staged = false;
    ASSERT_TRUE(moe_gate_up_staged_applies(p, t, on)) << tag;
    EXPECT_FALSE(moe_gate_up_staged_applies(p, t, off)) << tag;
    {  // one row a group but not the same row (a gather of several tokens): the kernel reads one row, so it declines
      GemvParams gathered = p;
      gathered.x_row_shared = false;
      EXPECT_FALSE(moe_gate_up_staged_applies(gathered, t, on)) << tag;
    }
    for (const bool staged : {false, true}) {
      auto dy = to_device(std::vector<float>(want.size(), kSentinel), t);
      p.y = dy.data();
      run_gemv(p, t, staged ? on : off);
      outs[staged] = to_host(dy.data(), want.size(), t);
      EXPECT_LT(rel_l2(outs[staged], want), tol) << tag << " active " << active << (staged ? " staged" : " per row pair");
      for (size_t i = size_t(active) * N; i < want.size(); ++i)
        ASSERT_EQ(outs[staged][i], kSentinel) << tag << ": an inactive group's row was written, element " << i;
    }
  }
};

}  // namespace ds::gpu::test
