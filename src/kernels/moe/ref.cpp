#include <algorithm>
#include <numeric>
#include <vector>

#include "core/error.h"
#include "core/parallel.h"
#include "kernels/activation/op.h"
#include "kernels/common/math.h"
#include "kernels/gemm/op.h"
#include "kernels/moe/op.h"

namespace ds::kernels {
namespace {

// Indices of the `k` largest values (ties: lower index first), best first.
void top_indices(const std::vector<float>& v, const std::vector<char>& eligible, int64_t k,
                 std::vector<int32_t>* out) {
  out->clear();
  for (int32_t i = 0; i < int32_t(v.size()); ++i)
    if (eligible.empty() || eligible[i]) out->push_back(i);
  auto better = [&](int32_t a, int32_t b) { return v[a] > v[b] || (v[a] == v[b] && a < b); };
  const int64_t kk = std::min<int64_t>(k, int64_t(out->size()));
  std::partial_sort(out->begin(), out->begin() + kk, out->end(), better);
  out->resize(size_t(kk));
}

}  // namespace

void run_moe_route_cpu(const MoeRouteParams& p) {
  if (p.tokens == 0) return;
  DS_CHECK(p.logits && p.topk_ids && p.topk_weights, "moe route: null pointer");
  const int64_t E = p.num_experts, k = p.top_k, ldk = moe_route_ldk(p);
  DS_CHECK(k >= 1 && p.num_groups >= 1 && E % p.num_groups == 0 && p.topk_groups >= 1 &&
               p.topk_groups <= p.num_groups && k <= p.topk_groups * (E / p.num_groups),
           "moe route: bad routing sizes num_experts={} top_k={} groups={} topk_groups={}", E, k,
           p.num_groups, p.topk_groups);
  DS_CHECK(ldk >= k + (p.shared_expert_id >= 0 ? 1 : 0), "moe route: ldk {} too small for top_k {}{}", ldk, k,
           p.shared_expert_id >= 0 ? " + a shared expert" : "");
  const int64_t per_group = E / p.num_groups;
  parallel_for(size_t(p.tokens), [&](size_t b, size_t e) {
    std::vector<float> s(E), sel(E), gscore(p.num_groups);
    std::vector<char> eligible;
    std::vector<int32_t> chosen, groups, two;
    for (size_t t = b; t < e; ++t) {
      const float* lg = p.logits + int64_t(t) * E;
      for (int64_t i = 0; i < E; ++i) {
        s[i] = sigmoid(lg[i]);
        sel[i] = s[i] + (p.bias ? p.bias[i] : 0.0f);
      }
      eligible.clear();
      if (p.num_groups > 1) {
        for (int64_t g = 0; g < p.num_groups; ++g) {
          std::vector<float> part(sel.begin() + g * per_group, sel.begin() + (g + 1) * per_group);
          top_indices(part, {}, 2, &two);
          gscore[g] = 0.0f;
          for (int32_t i : two) gscore[g] += part[i];
        }
        top_indices(gscore, {}, p.topk_groups, &groups);
        eligible.assign(size_t(E), 0);
        for (int32_t g : groups) std::fill_n(eligible.begin() + g * per_group, per_group, 1);
      }
      if (p.forced_ids) chosen.assign(p.forced_ids + int64_t(t) * k, p.forced_ids + (int64_t(t) + 1) * k);
      else top_indices(sel, eligible, k, &chosen);
      int32_t* ids = p.topk_ids + int64_t(t) * ldk;
      float* w = p.topk_weights + int64_t(t) * ldk;
      float sum = 0.0f;
      for (int64_t i = 0; i < k; ++i) {
        ids[i] = chosen[i];
        w[i] = p.biased_weights ? sel[chosen[i]] : s[chosen[i]];
        sum += w[i];
      }
      const float norm = p.renormalize ? 1.0f / (sum + 1e-20f) : 1.0f;
      for (int64_t i = 0; i < k; ++i) w[i] = w[i] * norm * p.scale;
      if (p.shared_expert_id >= 0) {  // a shared expert folded in as one more pair, weight 1
        ids[k] = p.shared_expert_id;
        w[k] = 1.0f;
      }
    }
  }, 8);
}

void run_moe_experts_cpu(const MoeExpertsParams& p) {
  if (p.T == 0) return;
  DS_CHECK(p.x && p.ids && p.weights && p.w1 && p.w2 && p.w3 && p.y, "moe experts: null pointer");
  // Group the (token, slot) pairs by expert.
  std::vector<std::vector<std::pair<int32_t, float>>> rows(size_t(p.E));
  for (int64_t t = 0; t < p.T; ++t)
    for (int64_t k = 0; k < p.top_k; ++k) {
      const int32_t e = p.ids[t * p.top_k + k];
      DS_CHECK(e >= 0 && e < p.E, "moe experts: expert id {} of token {} is outside 0..{}", e, t, p.E - 1);
      rows[e].push_back({int32_t(t), p.weights[t * p.top_k + k]});
    }
  std::vector<float> xe, h1, h3, out;
  for (int64_t e = 0; e < p.E; ++e) {
    const auto& r = rows[size_t(e)];
    if (r.empty() || !p.w1[e]) continue;  // unused, or held by another rank (expert parallelism)
    const int64_t n = int64_t(r.size());
    xe.resize(size_t(n * p.D));
    h1.resize(size_t(n * p.I));
    h3.resize(size_t(n * p.I));
    out.resize(size_t(n * p.D));
    for (int64_t i = 0; i < n; ++i)
      std::copy_n(p.x + int64_t(r[i].first) * p.D, p.D, xe.begin() + i * p.D);
    run_gemm_cpu({.x = xe.data(), .w = p.w1[e], .y = h1.data(), .M = n, .N = p.I, .K = p.D});
    run_gemm_cpu({.x = xe.data(), .w = p.w3[e], .y = h3.data(), .M = n, .N = p.I, .K = p.D});
    run_silu_mul_cpu({.gate = h1.data(), .up = h3.data(), .y = h1.data(), .rows = n, .dim = p.I});
    run_gemm_cpu({.x = h1.data(), .w = p.w2[e], .y = out.data(), .M = n, .N = p.D, .K = p.I});
    for (int64_t i = 0; i < n; ++i) {
      float* y = p.y + int64_t(r[i].first) * p.D;
      const float w = r[i].second;
      for (int64_t d = 0; d < p.D; ++d) y[d] += w * out[i * p.D + d];
    }
  }
}

}  // namespace ds::kernels
