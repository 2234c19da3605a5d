// One token's MoE router + routing in one launch (run_moe_router_one, DELTASERVE_CUDA_ROUTER_ONE): its logits
// against a float64 host product of the normalised row, and its routing and one-token layout bit-equal to
// run_moe_route_align's on those logits; relaunched (the CTA counter resets itself); and the tiny model's decode
// logits with it against the router GEMV + routing launch.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>

#include "cuda/cuda_backend.h"
#include "cuda/kernels/moe_route.h"
#include "gpu_test_util.h"
#include "model/backend.h"

namespace ds::gpu::test {
namespace {

struct Case {
  int hidden, experts, top_k, groups, topk_groups;
  bool norm, shared;
};

void expect_router_one(const Case& c, DType t) {
  const DeviceContext& ctx = test_ctx();
  const int H = c.hidden, E = c.experts, kp = c.top_k + (c.shared ? 1 : 0);
  const auto x = rounded(randn(size_t(H), 31 + H, 3.f), t);
  const auto nw = rounded(randn(size_t(H), 32), t);
  const auto w = rounded(randn(size_t(E) * H, 33 + E, 0.05f), t);
  const auto bias = randn(size_t(E), 34, 0.1f);
  auto dx = to_device(x, t), dnw = to_device(nw, t), dw = to_device(w, t), dbias = to_device(bias, DType::F32);
  DeviceBuffer logits(size_t(E) * 4), counter(4), ids(size_t(kp) * 4), wts(size_t(kp) * 4), ids2(size_t(kp) * 4),
      wts2(size_t(kp) * 4);
  DeviceBuffer pp(64 * 4), st(64 * 4), ae(size_t(E + 1) * 4), as(size_t(E + 2) * 4), na(4), pp2(64 * 4), st2(64 * 4),
      ae2(size_t(E + 1) * 4), as2(size_t(E + 2) * 4), na2(4);
  DS_CUDA_CHECK(cudaMemset(counter.data(), 0, 4));
  MoeRouteParams r;
  r.logits = logits.as<float>();
  r.bias = dbias.as<float>();
  r.topk_ids = ids.as<int32_t>();
  r.topk_weights = wts.as<float>();
  r.tokens = 1;
  r.num_experts = E;
  r.top_k = c.top_k;
  r.num_groups = c.groups;
  r.topk_groups = c.topk_groups;
  r.scale = 2.446f;
  r.shared_expert_id = c.shared ? E : -1;
  MoeAlignParams a{.ids = ids.as<int32_t>(), .tokens = 1, .k = kp, .num_experts = E + (c.shared ? 1 : 0),
                   .pair_pos = pp.as<int32_t>(), .sorted_token = st.as<int32_t>(), .active_expert = ae.as<int32_t>(),
                   .active_start = as.as<int32_t>(), .num_active = na.as<int32_t>()};
  MoeRouterOneParams g{.x = dx.data(), .norm_weight = c.norm ? dnw.data() : nullptr, .norm_eps = 1e-6f,
                       .w = dw.data(), .hidden = H, .logits = logits.as<float>(), .counter = counter.as<int>()};
  ASSERT_TRUE(moe_router_one_applies(g, r, a));
  for (int launch = 0; launch < 2; ++launch) {  // the second: the counter was reset by the first
    poison(logits);
    poison(ids);
    run_moe_router_one(g, r, a, t, ctx);
    DS_CUDA_CHECK(cudaDeviceSynchronize());
    EXPECT_EQ(to_host_raw<int>(counter.data(), 1)[0], 0) << "launch " << launch;
    // logits: the row normalised and rounded as the norm kernel stores it, times the weights (float64)
    double ss = 0.0;
    for (float v : x) ss += double(v) * v;
    const float inv = 1.f / std::sqrt(float(ss / H) + 1e-6f);
    std::vector<float> xh(static_cast<size_t>(H));
    for (int k = 0; k < H; ++k) xh[size_t(k)] = c.norm ? x[size_t(k)] * inv * nw[size_t(k)] : x[size_t(k)];
    xh = rounded(xh, t);
    std::vector<float> want(static_cast<size_t>(E));
    for (int e = 0; e < E; ++e) {
      double s = 0.0;
      for (int k = 0; k < H; ++k) s += double(w[size_t(e) * H + size_t(k)]) * xh[size_t(k)];
      want[size_t(e)] = float(s);
    }
    const auto got = to_host(logits.data(), size_t(E), DType::F32);
    EXPECT_LT(rel_l2(got, want), 1e-5) << "logits, launch " << launch;
    // the routing of those logits by run_moe_route_align: the same ids, weights and layout, bit for bit
    MoeRouteParams r2 = r;
    r2.topk_ids = ids2.as<int32_t>();
    r2.topk_weights = wts2.as<float>();
    MoeAlignParams a2 = a;
    a2.ids = ids2.as<int32_t>();
    a2.pair_pos = pp2.as<int32_t>();
    a2.sorted_token = st2.as<int32_t>();
    a2.active_expert = ae2.as<int32_t>();
    a2.active_start = as2.as<int32_t>();
    a2.num_active = na2.as<int32_t>();
    run_moe_route_align(r2, a2, ctx);
    DS_CUDA_CHECK(cudaDeviceSynchronize());
    EXPECT_EQ(to_host_raw<int32_t>(ids.data(), size_t(kp)), to_host_raw<int32_t>(ids2.data(), size_t(kp)));
    EXPECT_EQ(to_host_raw<float>(wts.data(), size_t(kp)), to_host_raw<float>(wts2.data(), size_t(kp)));
    EXPECT_EQ(to_host_raw<int32_t>(pp.data(), size_t(kp)), to_host_raw<int32_t>(pp2.data(), size_t(kp)));
    EXPECT_EQ(to_host_raw<int32_t>(ae.data(), size_t(kp)), to_host_raw<int32_t>(ae2.data(), size_t(kp)));
    EXPECT_EQ(to_host_raw<int32_t>(as.data(), size_t(kp + 1)), to_host_raw<int32_t>(as2.data(), size_t(kp + 1)));
    EXPECT_EQ(to_host_raw<int32_t>(na.data(), 1), to_host_raw<int32_t>(na2.data(), 1));
  }
}

// The 48B model's router (2,304 x 256, register routing, the shared expert folded in), a row the pre-wait
// vectors do not cover (3,328 bf16: 13 a lane), no norm, grouped routing (the shared-memory path), and fp32.
TEST(GpuOps, MoeRouterOneMatchesRouterAndRouting) {
  DS_REQUIRE_GPU();
  for (DType t : {DType::BF16, DType::F32}) {
    expect_router_one({2304, 256, 8, 1, 1, true, true}, t);
    expect_router_one({2304, 256, 8, 1, 1, true, false}, t);
    expect_router_one({3328, 64, 6, 1, 1, false, false}, t);
    expect_router_one({256, 64, 4, 4, 2, true, true}, t);
  }
}

// The tiny model's decode steps (batch 1, fp32): logits with the router + routing in one launch against the
// router GEMV and the routing launch (the same logits to fp32 summation order; a routing flip would be O(1)).
std::vector<float> decode_logits(const char* on) {
  ::setenv("DELTASERVE_CUDA_ROUTER_ONE", on, 1);
  BackendOptions go;
  go.model_dir = std::string(DS_FIXTURES_DIR) + "/tiny/model";
  go.device = "cuda";
  go.dtype = "float32";
  go.max_num_seqs = 2;
  go.block_size = 16;
  go.num_blocks = 64;
  auto gpu = make_cuda_backend(go);
  ::unsetenv("DELTASERVE_CUDA_ROUTER_ONE");
  std::vector<int32_t> ids(static_cast<size_t>(30)), pages = {3, 7, 9};
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t((i * 7919 + 13) % 1790);
  ForwardBatch pre;
  pre.add(0, 0, ids, pages);
  forward_logits(*gpu, pre);
  std::vector<float> out;
  for (int step = 0; step < 4; ++step) {
    ForwardBatch d;
    d.add(0, 30 + step, {int32_t(100 + 7 * step)}, pages);
    const auto l = forward_logits(*gpu, d);
    out.insert(out.end(), l.begin(), l.end());
  }
  return out;
}

TEST(GpuModelRouterOne, DecodeLogitsMatchTheTwoLaunches) {
  DS_REQUIRE_GPU();
  const auto two = decode_logits("0"), one = decode_logits("1");
  ASSERT_EQ(two.size(), one.size());
  const double e = rel_l2(one, two);
  std::printf("[router one] batch-1 decode logits vs router GEMV + routing: rel L2 %.3g\n", e);
  EXPECT_LT(e, 1e-5);
}

}  // namespace
}  // namespace ds::gpu::test
