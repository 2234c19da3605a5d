// Op harness, part 3: MoE routing (sigmoid + correction bias, grouped top-k, renormalise, scale;
// biased-weights switch), the token permutation, and the whole routed-expert path (router GEMV,
// route, permute, fused gate/up + SiLU*mul, down, weighted combine, shared expert folded in as an
// extra expert) against the CPU twins, 256 experts top-8, hidden 2304.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <set>
#include <string>

#include "cuda/kernels/elementwise.h"
#include "cuda/kernels/gemv.h"
#include "cuda/kernels/moe_gemm.h"
#include "cuda/kernels/moe_gemm_wgmma.h"
#include "cuda/kernels/moe_params.h"
#include "cuda/kernels/moe_route.h"
#include "gpu_test_util.h"
#include "kernels/activation/op.h"
#include "kernels/gemm/op.h"
#include "kernels/moe/op.h"

namespace ds::gpu::test {
namespace {

struct RouteCase {
  int groups, topk_groups;
  bool biased;
  bool forced = false;
};

TEST(GpuOps, MoeRouteMatchesCpu) {
  DS_REQUIRE_GPU();
  const int T = 33, E = 256, k = 8;
  // the last case pins the choice (forced_ids, both sides): a rotation of each token's CPU choice
  for (RouteCase rc : {RouteCase{1, 1, false}, RouteCase{8, 4, false}, RouteCase{8, 3, true}, RouteCase{1, 1, false, true}}) {
    auto logits = randn(size_t(T) * E, 70, 2.f);
    auto bias = randn(E, 71, 0.1f);
    auto dl = to_device(logits, DType::F32), db = to_device(bias, DType::F32);
    DeviceBuffer dids(size_t(T) * (k + 1) * 4), dw(size_t(T) * (k + 1) * 4);
    poison(dids);
    poison(dw);
    std::vector<int32_t> forced(size_t(T) * k);
    for (int i = 0; i < T * k; ++i) forced[size_t(i)] = (i * 37 + i / k) % E;  // distinct within a token
    auto dforced = to_device_raw(forced);
    // One params struct for both twins: the CPU run differs only in its (host) pointers.
    const MoeRouteParams p{.logits = dl.as<float>(),
                           .bias = db.as<float>(),
                           .topk_ids = dids.as<int32_t>(),
                           .topk_weights = dw.as<float>(),
                           .tokens = T,
                           .num_experts = E,
                           .top_k = k,
                           .num_groups = rc.groups,
                           .topk_groups = rc.topk_groups,
                           .scale = 2.446f,
                           .biased_weights = rc.biased,
                           .ldk = k + 1,
                           .shared_expert_id = E,
                           .forced_ids = rc.forced ? dforced.as<int32_t>() : nullptr};
    run_moe_route(p, test_ctx());
    auto ids = to_host_raw<int32_t>(dids.data(), size_t(T) * (k + 1));
    auto ws = to_host(dw.data(), size_t(T) * (k + 1), DType::F32);
    std::vector<int32_t> rids(size_t(T) * (k + 1));
    std::vector<float> rws(size_t(T) * (k + 1));
    MoeRouteParams c = p;
    c.logits = logits.data();
    c.bias = bias.data();
    c.topk_ids = rids.data();
    c.topk_weights = rws.data();
    c.forced_ids = rc.forced ? forced.data() : nullptr;
    kernels::run_moe_route_cpu(c);
    for (int t = 0; t < T; ++t) {
      if (rc.forced) {
        for (int j = 0; j < k; ++j) EXPECT_EQ(rids[size_t(t) * (k + 1) + j], forced[size_t(t) * k + j]);
      }
      for (int j = 0; j <= k; ++j) {  // both best first, then the shared expert: same order, same weights
        EXPECT_EQ(ids[size_t(t) * (k + 1) + j], rids[size_t(t) * (k + 1) + j]) << "token " << t << " rank " << j;
        EXPECT_NEAR(ws[size_t(t) * (k + 1) + j], rws[size_t(t) * (k + 1) + j], 1e-6f);
      }
      EXPECT_EQ(ids[size_t(t) * (k + 1) + k], E);
      EXPECT_EQ(ws[size_t(t) * (k + 1) + k], 1.f);
    }
  }
}

// T tokens of k = 9 pairs (8 skewed over 40 experts, the last a folded shared expert 256); `multi`: the
// multi-CTA sort (switches.moe_align_multi with its scratch), `dropped`: every 7th pair another rank's (-1).
void check_align(int T, bool multi, bool dropped) {
  SCOPED_TRACE("tokens " + std::to_string(T) + (multi ? ", multi-CTA" : "") + (dropped ? ", dropped pairs" : ""));
  const int k = 9, E = 257;
  std::vector<int32_t> ids(size_t(T) * k);
  std::mt19937 g(72);
  for (int t = 0; t < T; ++t) {
    std::vector<int32_t> all(256);
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), g);
    for (int j = 0; j < 8; ++j) ids[size_t(t) * k + j] = all[size_t(j)] % 40;  // skewed: few experts, often
    ids[size_t(t) * k + 8] = 256;
  }
  if (dropped)
    for (size_t i = 0; i < ids.size(); i += 7) ids[i] = -1;
  auto di = to_device_raw(ids);
  DeviceBuffer pp(ids.size() * 4), st(ids.size() * 4), se(size_t(E) * 4), ss(size_t(E + 1) * 4), na(4);
  const int64_t cap = (int64_t(ids.size()) + kMoeAlignChunk - 1) / kMoeAlignChunk * E;
  DeviceBuffer blocks(size_t(cap) * 4);
  MoeAlignParams p;
  p.ids = di.as<int32_t>();
  p.tokens = T;
  p.k = k;
  p.num_experts = E;
  p.pair_pos = pp.as<int32_t>();
  p.sorted_token = st.as<int32_t>();
  p.active_expert = se.as<int32_t>();
  p.active_start = ss.as<int32_t>();
  p.num_active = na.as<int32_t>();
  p.block_offsets = blocks.as<int32_t>();
  p.block_offsets_capacity = cap;
  DeviceContext ctx = test_ctx();
  ctx.switches.moe_align_multi = multi;
  run_moe_align(p, ctx);
  auto pos = to_host_raw<int32_t>(pp.data(), ids.size());
  auto tok = to_host_raw<int32_t>(st.data(), ids.size());
  int n = to_host_raw<int32_t>(na.data(), 1)[0];
  auto sexp = to_host_raw<int32_t>(se.data(), size_t(n));
  auto sst = to_host_raw<int32_t>(ss.data(), size_t(n) + 1);
  std::set<int32_t> experts(ids.begin(), ids.end());
  experts.erase(-1);
  const int kept = int(std::count_if(ids.begin(), ids.end(), [](int32_t e) { return e >= 0; }));
  ASSERT_EQ(n, int(experts.size()));
  EXPECT_TRUE(std::is_sorted(sexp.begin(), sexp.end()));
  EXPECT_EQ(sst[0], 0);
  EXPECT_EQ(sst[size_t(n)], kept);
  std::vector<int> seen(size_t(kept), 0);
  for (int t = 0; t < T; ++t)
    for (int j = 0; j < k; ++j) {
      const int r = pos[size_t(t) * k + j];
      if (ids[size_t(t) * k + j] < 0) {
        EXPECT_EQ(r, -1);
        continue;
      }
      ASSERT_GE(r, 0);
      ASSERT_LT(r, kept);
      ++seen[size_t(r)];
      EXPECT_EQ(tok[size_t(r)], t);
      int s = int(std::upper_bound(sst.begin(), sst.end(), r) - sst.begin()) - 1;
      EXPECT_EQ(sexp[size_t(s)], ids[size_t(t) * k + j]);
    }
  for (int c : seen) EXPECT_EQ(c, 1);
}

// The counting sort: one CTA (300 tokens; 2,000 with the switch off), and the multi-CTA form at 2,000 and
// 8,192 tokens (18 and 72 CTAs), with and without dropped pairs.
TEST(GpuOps, MoeAlignPermutation) {
  DS_REQUIRE_GPU();
  check_align(300, false, false);
  check_align(2000, false, true);
  check_align(300, true, false);  // (below kMoeAlignMultiMinPairs: one CTA even with the switch)
  check_align(2000, true, false);
  check_align(2000, true, true);
  check_align(8192, true, true);
}

// The decode-time MoE path of the GPU model against the CPU experts twin: 5 tokens (route + sort,
// grouped GEMVs, combine) and 1 token (one-warp routing, the shared expert's weights requested before
// the routing is read, fused down projection + combine).
TEST(GpuOps, MoeExpertsDecodePath) {
  DS_REQUIRE_GPU();
  const int E = 256, k = 8, D = 2304, I = 512, kp = k + 1;
  for (int T : {5, 1})
  for (DType t : {DType::F32, DType::BF16}) {
    // weights generated on the device (fast), copied back for the CPU twin
    DeviceBuffer gu(size_t(E + 1) * 2 * I * D * dtype_size(t)), dn(size_t(E + 1) * D * I * dtype_size(t));
    run_fill_uniform(gu.data(), t, int64_t(E + 1) * 2 * I * D, -0.05f, 0.05f, 73, test_ctx());
    run_fill_uniform(dn.data(), t, int64_t(E + 1) * D * I, -0.05f, 0.05f, 74, test_ctx());
    auto h_gu = to_host(gu.data(), size_t(E + 1) * 2 * I * D, t);
    auto h_dn = to_host(dn.data(), size_t(E + 1) * D * I, t);
    auto x = rounded(randn(size_t(T) * D, 75), t);
    auto router = rounded(randn(size_t(E) * D, 76, 0.02f), t);
    auto bias = randn(E, 77, 0.05f);
    auto resid = rounded(randn(size_t(T) * D, 78), t);
    auto dx = to_device(x, t), dr = to_device(router, t), db = to_device(bias, DType::F32);
    auto dres = to_device(resid, t);
    DeviceBuffer logits(size_t(T) * E * 4), ids(size_t(T) * kp * 4), w(size_t(T) * kp * 4), pp(size_t(T) * kp * 4),
        st(size_t(T) * kp * 4), se(size_t(E + 1) * 4), ss(size_t(E + 2) * 4), na(4),
        act(size_t(T) * kp * I * 4), out(size_t(T) * kp * D * 4);
    GemvParams rg;
    rg.x = dx.data();
    rg.ldx = D;
    rg.w = dr.data();
    rg.y = logits.data();
    rg.ldy = E;
    rg.y_f32 = true;
    rg.N = E;
    rg.K = D;
    rg.M = T;
    run_gemv(rg, t, test_ctx());
    const MoeRouteParams r{.logits = logits.as<float>(),
                           .bias = db.as<float>(),
                           .topk_ids = ids.as<int32_t>(),
                           .topk_weights = w.as<float>(),
                           .tokens = T,
                           .num_experts = E,
                           .top_k = k,
                           .scale = 2.446f,
                           .ldk = kp,
                           .shared_expert_id = E};
    const MoeAlignParams a = moe_align_params(r, {.pair_pos = pp.as<int32_t>(),
                                                  .sorted_token = st.as<int32_t>(),
                                                  .active_expert = se.as<int32_t>(),
                                                  .active_start = ss.as<int32_t>(),
                                                  .num_active = na.as<int32_t>()});
    run_moe_route_align(r, a, test_ctx());  // one launch at this size
    const GemvParams g = moe_gate_up_gemv_params(r, a, dx.data(), D, gu.data(), D, I, act.data());
    if (T == 1) {  // as the model: the shared expert's group (pair k) streams before the routing is known
      ASSERT_TRUE(moe_one_token_layout(r, a));
      ASSERT_EQ(g.known_group, k);
      ASSERT_EQ(g.known_weight, E);
    }
    run_gemv(g, t, test_ctx());
    if (T == 1) {
      MoeDownCombineParams dc =
          moe_down_combine_params(g, pp.as<int32_t>(), ids.as<int32_t>(), w.as<float>(), kp, dn.data(), dres.data());
      ASSERT_EQ(dc.known_pair, k);  // the shared expert, carried over from the gate/up slot
      ASSERT_EQ(dc.known_expert, E);
      run_moe_down_combine(dc, t, test_ctx());
    } else {
      run_gemv(moe_down_gemv_params(g, dn.data(), out.data(), D), t, test_ctx());
      run_moe_combine(moe_combine_params(r, a, out.data(), dres.data(), D), t, test_ctx());
    }
    auto got = to_host(dres.data(), size_t(T) * D, t);

    // CPU: router, route, experts, shared expert
    std::vector<float> cl(size_t(T) * E);
    kernels::GemmParams gm;
    gm.x = x.data();
    gm.w = router.data();
    gm.y = cl.data();
    gm.M = T;
    gm.N = E;
    gm.K = D;
    kernels::run_gemm_cpu(gm);
    std::vector<int32_t> cids(size_t(T) * k);
    std::vector<float> cws(size_t(T) * k);
    MoeRouteParams cr = r;  // the same routing on the host, routed experts only
    cr.logits = cl.data();
    cr.bias = bias.data();
    cr.topk_ids = cids.data();
    cr.topk_weights = cws.data();
    cr.ldk = k;
    cr.shared_expert_id = -1;
    kernels::run_moe_route_cpu(cr);
    std::vector<const float*> w1(E), w3(E), w2(E);
    for (int e = 0; e < E; ++e) {
      w1[size_t(e)] = h_gu.data() + size_t(e) * 2 * I * D;
      w3[size_t(e)] = w1[size_t(e)] + size_t(I) * D;
      w2[size_t(e)] = h_dn.data() + size_t(e) * D * I;
    }
    std::vector<float> ref = resid;
    kernels::MoeExpertsParams ce;
    ce.x = x.data();
    ce.ids = cids.data();
    ce.weights = cws.data();
    ce.w1 = w1.data();
    ce.w3 = w3.data();
    ce.w2 = w2.data();
    ce.y = ref.data();
    ce.T = T;
    ce.D = D;
    ce.I = I;
    ce.E = E;
    ce.top_k = k;
    kernels::run_moe_experts_cpu(ce);
    // shared expert = expert E with weight 1
    std::vector<int32_t> sid(size_t(T), 0);
    std::vector<float> sw(size_t(T), 1.f);
    const float* s1 = h_gu.data() + size_t(E) * 2 * I * D;
    const float* s3 = s1 + size_t(I) * D;
    const float* s2 = h_dn.data() + size_t(E) * D * I;
    kernels::MoeExpertsParams cs = ce;
    cs.ids = sid.data();
    cs.weights = sw.data();
    cs.w1 = &s1;
    cs.w3 = &s3;
    cs.w2 = &s2;
    cs.E = 1;
    cs.top_k = 1;
    kernels::run_moe_experts_cpu(cs);
    // bf16: the GPU also rounds the intermediate activations and expert outputs to bf16
    EXPECT_LT(rel_l2(got, ref), tol(t)) << dtype_name(t) << " T=" << T;
  }
}

// The prefill path: routing of 300 tokens, then the tensor-core grouped GEMMs (16- and 64-token
// tiles) for gate/up + SiLU*mul and down, combined; against the CPU experts twin. bf16 only.
TEST(GpuOps, MoeGroupedGemmPrefill) {
  DS_REQUIRE_GPU();
  const int T = 300, E = 256, k = 8, D = 2304, I = 512;
  const DType t = DType::BF16;
  DeviceBuffer gu(size_t(E) * 2 * I * D * 2), dn(size_t(E) * D * I * 2);
  run_fill_uniform(gu.data(), t, int64_t(E) * 2 * I * D, -0.05f, 0.05f, 81, test_ctx());
  run_fill_uniform(dn.data(), t, int64_t(E) * D * I, -0.05f, 0.05f, 82, test_ctx());
  auto h_gu = to_host(gu.data(), size_t(E) * 2 * I * D, t);
  auto h_dn = to_host(dn.data(), size_t(E) * D * I, t);
  auto x = rounded(randn(size_t(T) * D, 83), t);
  auto logits = randn(size_t(T) * E, 84, 2.f);
  std::vector<float> bias(E, 0.f);
  auto resid = rounded(randn(size_t(T) * D, 85), t);
  auto dx = to_device(x, t), dl = to_device(logits, DType::F32), db = to_device(bias, DType::F32);
  DeviceBuffer ids(size_t(T) * k * 4), w(size_t(T) * k * 4), pp(size_t(T) * k * 4), st(size_t(T) * k * 4),
      se(size_t(E) * 4), ss(size_t(E + 1) * 4), na(4), act(size_t(T) * k * I * 2), out(size_t(T) * k * D * 2);
  const MoeRouteParams r{.logits = dl.as<float>(),
                         .bias = db.as<float>(),
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
  run_moe_route_align(r, a, test_ctx());  // > 64 tokens: the two-kernel path
  // CPU reference
  std::vector<int32_t> cids(size_t(T) * k);
  std::vector<float> cws(size_t(T) * k);
  MoeRouteParams cr = r;
  cr.logits = logits.data();
  cr.bias = bias.data();
  cr.topk_ids = cids.data();
  cr.topk_weights = cws.data();
  kernels::run_moe_route_cpu(cr);
  std::vector<const float*> w1(E), w3(E), w2(E);
  for (int e = 0; e < E; ++e) {
    w1[size_t(e)] = h_gu.data() + size_t(e) * 2 * I * D;
    w3[size_t(e)] = w1[size_t(e)] + size_t(I) * D;
    w2[size_t(e)] = h_dn.data() + size_t(e) * D * I;
  }
  std::vector<float> ref = resid;
  kernels::MoeExpertsParams ce;
  ce.x = x.data();
  ce.ids = cids.data();
  ce.weights = cws.data();
  ce.w1 = w1.data();
  ce.w3 = w3.data();
  ce.w2 = w2.data();
  ce.y = ref.data();
  ce.T = T;
  ce.D = D;
  ce.I = I;
  ce.E = E;
  ce.top_k = k;
  kernels::run_moe_experts_cpu(ce);
  // tiles of 16 and 64 tokens (mma.sync), then the Hopper wgmma kernel (prefill-sized launches), with the
  // weight tiles by TMA where whole tiles divide N (else the same kernel's cp.async copies)
  for (int variant = 0; variant < 4; ++variant) {
    const int tile = variant == 0 ? 16 : 64;
    DeviceContext ctx = test_ctx();
    ctx.switches.wgmma = variant >= 2;
    ctx.switches.moe_tma = variant == 3;
    if (variant >= 2) {
      ASSERT_TRUE(moe_gemm_wgmma_supported(
          moe_gate_up_gemm_params(a, dx.data(), D, gu.data(), D, I, act.data(), tile), ctx));
    }
    auto dres = to_device(resid, t);
    poison(act);
    poison(out);
    const MoeGemmParams g = moe_gate_up_gemm_params(a, dx.data(), D, gu.data(), D, I, act.data(), tile);
    run_moe_gemm(g, ctx);
    run_moe_gemm(moe_down_gemm_params(g, dn.data(), out.data(), D), ctx);
    run_moe_combine(moe_combine_params(r, a, out.data(), dres.data(), D), t, ctx);
    EXPECT_LT(rel_l2(to_host(dres.data(), ref.size(), t), ref), tol(t)) << "tile " << tile << " variant " << variant;
  }
}

}  // namespace
}  // namespace ds::gpu::test

namespace ds::gpu::test {
namespace {

// MoE routing + permutation of 2..64 tokens with a warp per token (DeviceContext::switches.route_warps)
// gives exactly what the 8-warp form gives: the same ids, weights, permutation and active experts.
TEST(GpuOps, MoeRouteAlignWarpPerTokenMatches) {
  DS_REQUIRE_GPU();
  const int E = 256, k = 8, kp = k + 1;
  for (int T : {2, 9, 16, 33, 64}) {
    std::vector<float> lg = randn(size_t(T) * E, 900 + T, 2.f);
    auto dl = to_device(lg, DType::F32), db = to_device(randn(E, 901, 0.05f), DType::F32);
    auto run = [&](bool wide) {
      DeviceBuffer ids(size_t(T) * kp * 4), w(size_t(T) * kp * 4), pp(size_t(T) * kp * 4), st(size_t(T) * kp * 4),
          se(size_t(E + 1) * 4), ss(size_t(E + 2) * 4), na(4);
      for (DeviceBuffer* b : {&ids, &w, &pp, &st, &se, &ss, &na}) poison(*b);
      const MoeRouteParams r{.logits = dl.as<float>(), .bias = db.as<float>(), .topk_ids = ids.as<int32_t>(),
                             .topk_weights = w.as<float>(), .tokens = T, .num_experts = E, .top_k = k,
                             .scale = 2.446f, .ldk = kp, .shared_expert_id = E};
      const MoeAlignParams a = moe_align_params(r, {.pair_pos = pp.as<int32_t>(), .sorted_token = st.as<int32_t>(),
                                                    .active_expert = se.as<int32_t>(), .active_start = ss.as<int32_t>(),
                                                    .num_active = na.as<int32_t>()});
      DeviceContext ctx = test_ctx();
      ctx.switches.route_warps = wide;
      run_moe_route_align(r, a, ctx);
      std::vector<int32_t> n(1);
      DS_CUDA_CHECK(cudaMemcpy(n.data(), na.data(), 4, cudaMemcpyDeviceToHost));
      auto ints = [&](const DeviceBuffer& b, size_t count) {
        std::vector<int32_t> v(count);
        DS_CUDA_CHECK(cudaMemcpy(v.data(), b.data(), count * 4, cudaMemcpyDeviceToHost));
        return v;
      };
      const size_t pairs = size_t(T) * kp;
      return std::make_tuple(ints(ids, pairs), ints(w, pairs), ints(pp, pairs), ints(st, pairs),
                             ints(se, size_t(n[0])), ints(ss, size_t(n[0]) + 1), n[0]);
    };
    const auto narrow = run(false), wide = run(true);
    EXPECT_EQ(std::get<0>(narrow), std::get<0>(wide)) << "ids, T=" << T;
    EXPECT_EQ(std::get<1>(narrow), std::get<1>(wide)) << "weights (bits), T=" << T;
    // the order of an expert's rows follows atomics: compare each expert's tokens as sets, and check that
    // the permutation and its inverse agree
    for (const auto* v : {&narrow, &wide}) {
      const auto& pos = std::get<2>(*v);
      const auto& tok = std::get<3>(*v);
      for (size_t i = 0; i < pos.size(); ++i) ASSERT_EQ(tok[size_t(pos[i])], int32_t(i / kp)) << "T=" << T;
    }
    auto groups = [&](const auto& v) {
      std::vector<int32_t> tok = std::get<3>(v);
      const auto& st = std::get<5>(v);
      for (size_t g = 0; g + 1 < st.size(); ++g) std::sort(tok.begin() + st[g], tok.begin() + st[g + 1]);
      return tok;
    };
    EXPECT_EQ(groups(narrow), groups(wide)) << "tokens per expert, T=" << T;
    EXPECT_EQ(std::get<4>(narrow), std::get<4>(wide)) << "active_expert, T=" << T;
    EXPECT_EQ(std::get<5>(narrow), std::get<5>(wide)) << "active_start, T=" << T;
    EXPECT_EQ(std::get<6>(narrow), std::get<6>(wide)) << "num_active, T=" << T;
  }
}

}  // namespace
}  // namespace ds::gpu::test
