// Op harness, part 3: MoE routing (sigmoid + correction bias, grouped top-k, renormalise, scale;
// biased-weights switch), the token permutation, and the whole routed-expert path (router GEMV,
// route, permute, fused gate/up + SiLU*mul, down, weighted combine, shared expert folded in as an
// extra expert) against the CPU twins, 256 experts top-8, hidden 2304.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <set>

#include "cuda/kernels/elementwise.h"
#include "cuda/kernels/gemv.h"
#include "cuda/kernels/moe_gemm.h"
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
    MoeRouteParams p;
    p.logits = dl.as<float>();
    p.bias = db.as<float>();
    p.tokens = T;
    p.num_experts = E;
    p.top_k = k;
    p.num_groups = rc.groups;
    p.topk_groups = rc.topk_groups;
    p.biased_weights = rc.biased;
    p.scale = 2.446f;
    p.topk_ids = dids.as<int32_t>();
    p.topk_weights = dw.as<float>();
    p.ldk = k + 1;
    p.shared_expert_id = E;
    std::vector<int32_t> forced(size_t(T) * k);
    for (int i = 0; i < T * k; ++i) forced[size_t(i)] = (i * 37 + i / k) % E;  // distinct within a token
    DeviceBuffer dforced(forced.size() * 4);
    DS_CUDA_CHECK(cudaMemcpy(dforced.data(), forced.data(), forced.size() * 4, cudaMemcpyHostToDevice));
    if (rc.forced) p.forced_ids = dforced.as<int32_t>();
    run_moe_route(p, nullptr);
    auto ids = to_host_raw<int32_t>(dids.data(), size_t(T) * (k + 1));
    auto ws = to_host(dw.data(), size_t(T) * (k + 1), DType::F32);
    std::vector<int32_t> rids(size_t(T) * k);
    std::vector<float> rws(size_t(T) * k);
    kernels::MoeRouteParams c;
    c.logits = logits.data();
    c.bias = bias.data();
    c.ids = rids.data();
    c.weights = rws.data();
    c.T = T;
    c.E = E;
    c.top_k = k;
    c.num_groups = rc.groups;
    c.topk_group = rc.topk_groups;
    c.scaling = 2.446f;
    c.biased_weights = rc.biased;
    if (rc.forced) c.forced_ids = forced.data();
    kernels::run_moe_route_cpu(c);
    if (rc.forced) {
      EXPECT_EQ(rids, forced);
    }
    for (int t = 0; t < T; ++t) {
      for (int j = 0; j < k; ++j) {  // both best first: same order, same weights
        EXPECT_EQ(ids[size_t(t) * (k + 1) + j], rids[size_t(t) * k + j]) << "token " << t << " rank " << j;
        EXPECT_NEAR(ws[size_t(t) * (k + 1) + j], rws[size_t(t) * k + j], 1e-6f);
      }
      EXPECT_EQ(ids[size_t(t) * (k + 1) + k], E);
      EXPECT_EQ(ws[size_t(t) * (k + 1) + k], 1.f);
    }
  }
}

TEST(GpuOps, MoeAlignPermutation) {
  DS_REQUIRE_GPU();
  const int T = 300, k = 9, E = 257;
  std::vector<int32_t> ids(size_t(T) * k);
  std::mt19937 g(72);
  for (int t = 0; t < T; ++t) {
    std::vector<int32_t> all(256);
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), g);
    for (int j = 0; j < 8; ++j) ids[size_t(t) * k + j] = all[size_t(j)] % 40;  // skewed: few experts, often
    ids[size_t(t) * k + 8] = 256;
  }
  auto di = to_device_raw(ids);
  DeviceBuffer pp(ids.size() * 4), st(ids.size() * 4), se(size_t(E) * 4), ss(size_t(E + 1) * 4), na(4);
  MoeAlignParams p;
  p.ids = di.as<int32_t>();
  p.tokens = T;
  p.k = k;
  p.num_experts = E;
  p.pair_pos = pp.as<int32_t>();
  p.sorted_token = st.as<int32_t>();
  p.slot_expert = se.as<int32_t>();
  p.slot_start = ss.as<int32_t>();
  p.num_active = na.as<int32_t>();
  run_moe_align(p, nullptr);
  auto pos = to_host_raw<int32_t>(pp.data(), ids.size());
  auto tok = to_host_raw<int32_t>(st.data(), ids.size());
  int n = to_host_raw<int32_t>(na.data(), 1)[0];
  auto sexp = to_host_raw<int32_t>(se.data(), size_t(n));
  auto sst = to_host_raw<int32_t>(ss.data(), size_t(n) + 1);
  std::set<int32_t> experts(ids.begin(), ids.end());
  ASSERT_EQ(n, int(experts.size()));
  EXPECT_TRUE(std::is_sorted(sexp.begin(), sexp.end()));
  EXPECT_EQ(sst[0], 0);
  EXPECT_EQ(sst[size_t(n)], int(ids.size()));
  std::vector<int> seen(ids.size(), 0);
  for (int t = 0; t < T; ++t)
    for (int j = 0; j < k; ++j) {
      int r = pos[size_t(t) * k + j];
      ASSERT_GE(r, 0);
      ASSERT_LT(r, int(ids.size()));
      ++seen[size_t(r)];
      EXPECT_EQ(tok[size_t(r)], t);
      int s = int(std::upper_bound(sst.begin(), sst.end(), r) - sst.begin()) - 1;
      EXPECT_EQ(sexp[size_t(s)], ids[size_t(t) * k + j]);
    }
  for (int c : seen) EXPECT_EQ(c, 1);
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
    run_fill_uniform(gu.data(), t, int64_t(E + 1) * 2 * I * D, -0.05f, 0.05f, 73, nullptr);
    run_fill_uniform(dn.data(), t, int64_t(E + 1) * D * I, -0.05f, 0.05f, 74, nullptr);
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
    run_gemv(rg, t, nullptr);
    MoeRouteParams r;
    r.logits = logits.as<float>();
    r.bias = db.as<float>();
    r.tokens = T;
    r.num_experts = E;
    r.top_k = k;
    r.scale = 2.446f;
    r.topk_ids = ids.as<int32_t>();
    r.topk_weights = w.as<float>();
    r.ldk = kp;
    r.shared_expert_id = E;
    MoeAlignParams a;
    a.ids = ids.as<int32_t>();
    a.tokens = T;
    a.k = kp;
    a.num_experts = E + 1;
    a.pair_pos = pp.as<int32_t>();
    a.sorted_token = st.as<int32_t>();
    a.slot_expert = se.as<int32_t>();
    a.slot_start = ss.as<int32_t>();
    a.num_active = na.as<int32_t>();
    run_moe_route_align(r, a, nullptr);  // one launch at this size
    GemvParams g;
    g.x = dx.data();
    g.ldx = D;
    g.x_rows = st.as<int32_t>();
    g.w = gu.data();
    g.w_group_stride = int64_t(2) * I * D;
    g.y = act.data();
    g.ldy = I;
    g.N = I;
    g.K = D;
    g.num_slots = std::min(E + 1, T * kp);
    g.slot_weight = se.as<int32_t>();
    g.slot_start = ss.as<int32_t>();
    g.num_active = na.as<int32_t>();
    g.max_rows = T;
    g.epi = GemvEpilogue::SiluMul;
    if (T == 1) {  // as the model: the shared expert's slot (pair k) streams before the routing is known
      ASSERT_TRUE(moe_one_token_layout(r, a));
      g.known_slot = k;
      g.known_weight = E;
    }
    run_gemv(g, t, nullptr);
    if (T == 1) {
      MoeDownCombineParams dc =
          moe_down_combine_params(g, pp.as<int32_t>(), ids.as<int32_t>(), w.as<float>(), kp, dn.data(), dres.data());
      ASSERT_EQ(dc.known_pair, k);  // the shared expert, carried over from the gate/up slot
      ASSERT_EQ(dc.known_expert, E);
      run_moe_down_combine(dc, t, nullptr);
    } else {
      run_gemv(moe_down_gemv_params(g, dn.data(), out.data(), D), t, nullptr);
      MoeCombineParams cb;
      cb.expert_out = out.data();
      cb.pair_pos = pp.as<int32_t>();
      cb.weights = w.as<float>();
      cb.residual = dres.data();
      cb.tokens = T;
      cb.k = kp;
      cb.dim = D;
      run_moe_combine(cb, t, nullptr);
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
    kernels::MoeRouteParams cr;
    cr.logits = cl.data();
    cr.bias = bias.data();
    cr.ids = cids.data();
    cr.weights = cws.data();
    cr.T = T;
    cr.E = E;
    cr.top_k = k;
    cr.scaling = 2.446f;
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
  run_fill_uniform(gu.data(), t, int64_t(E) * 2 * I * D, -0.05f, 0.05f, 81, nullptr);
  run_fill_uniform(dn.data(), t, int64_t(E) * D * I, -0.05f, 0.05f, 82, nullptr);
  auto h_gu = to_host(gu.data(), size_t(E) * 2 * I * D, t);
  auto h_dn = to_host(dn.data(), size_t(E) * D * I, t);
  auto x = rounded(randn(size_t(T) * D, 83), t);
  auto logits = randn(size_t(T) * E, 84, 2.f);
  std::vector<float> bias(E, 0.f);
  auto resid = rounded(randn(size_t(T) * D, 85), t);
  auto dx = to_device(x, t), dl = to_device(logits, DType::F32), db = to_device(bias, DType::F32);
  DeviceBuffer ids(size_t(T) * k * 4), w(size_t(T) * k * 4), pp(size_t(T) * k * 4), st(size_t(T) * k * 4),
      se(size_t(E) * 4), ss(size_t(E + 1) * 4), na(4), act(size_t(T) * k * I * 2), out(size_t(T) * k * D * 2);
  MoeRouteParams r;
  r.logits = dl.as<float>();
  r.bias = db.as<float>();
  r.tokens = T;
  r.num_experts = E;
  r.top_k = k;
  r.scale = 2.446f;
  r.topk_ids = ids.as<int32_t>();
  r.topk_weights = w.as<float>();
  r.ldk = k;
  MoeAlignParams a;
  a.ids = ids.as<int32_t>();
  a.tokens = T;
  a.k = k;
  a.num_experts = E;
  a.pair_pos = pp.as<int32_t>();
  a.sorted_token = st.as<int32_t>();
  a.slot_expert = se.as<int32_t>();
  a.slot_start = ss.as<int32_t>();
  a.num_active = na.as<int32_t>();
  run_moe_route_align(r, a, nullptr);  // > 64 tokens: the two-kernel path
  // CPU reference
  std::vector<int32_t> cids(size_t(T) * k);
  std::vector<float> cws(size_t(T) * k);
  kernels::MoeRouteParams cr;
  cr.logits = logits.data();
  cr.bias = bias.data();
  cr.ids = cids.data();
  cr.weights = cws.data();
  cr.T = T;
  cr.E = E;
  cr.top_k = k;
  cr.scaling = 2.446f;
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
  for (int tile : {16, 64}) {
    auto dres = to_device(resid, t);
    poison(act);
    poison(out);
    MoeGemmParams g;
    g.x = dx.data();
    g.ldx = D;
    g.x_rows = st.as<int32_t>();
    g.w = gu.data();
    g.w_group_stride = int64_t(2) * I * D;
    g.y = act.data();
    g.ldy = I;
    g.N = I;
    g.K = D;
    g.silu_mul = true;
    g.slot_expert = se.as<int32_t>();
    g.slot_start = ss.as<int32_t>();
    g.num_active = na.as<int32_t>();
    g.max_slots = E;
    g.max_rows = T * k;
    g.tile_tokens = tile;
    run_moe_gemm(g, nullptr);
    run_moe_gemm(moe_down_gemm_params(g, dn.data(), out.data(), D), nullptr);
    MoeCombineParams cb;
    cb.expert_out = out.data();
    cb.pair_pos = pp.as<int32_t>();
    cb.weights = w.as<float>();
    cb.residual = dres.data();
    cb.tokens = T;
    cb.k = k;
    cb.dim = D;
    run_moe_combine(cb, t, nullptr);
    EXPECT_LT(rel_l2(to_host(dres.data(), ref.size(), t), ref), tol(t)) << "tile " << tile;
  }
}

}  // namespace
}  // namespace ds::gpu::test
