#include "model/moe_layer.h"

#include <algorithm>

#include "core/error.h"
#include "kernels/gemm/op.h"
#include "kernels/moe/op.h"

namespace ds {

MoeLayer::MoeLayer(const ModelConfig& c, const MoeWeights<HostTensor>& w, int layer)
    : cfg_(c.moe), layer_(layer), hidden_(c.hidden_size), w_(&w) {
  for (const auto& e : w.experts) {  // an empty expert is another rank's (expert parallelism): null, skipped
    w1_.push_back(e.gate.empty() ? nullptr : e.gate.ptr());
    w3_.push_back(e.up.empty() ? nullptr : e.up.ptr());
    w2_.push_back(e.down.empty() ? nullptr : e.down.ptr());
  }
  if (c.moe.num_shared_experts > 0) shared_ = std::make_unique<DenseMlp>(w.shared, hidden_);
}

void MoeLayer::forward(const StepContext& ctx, const float* x, float* y) const {
  using namespace kernels;
  const int64_t T = ctx.num_tokens, E = cfg_.num_experts, k = cfg_.top_k;
  std::vector<float> logits(size_t(T * E)), weights(size_t(T * k));
  std::vector<int32_t> ids(size_t(T * k));
  run_gemm_cpu({.x = x, .w = w_->router.ptr(), .y = logits.data(), .M = T, .N = E, .K = hidden_});
  const int32_t* forced = nullptr;
  if (ctx.opts.forced_routes) {
    auto it = ctx.opts.forced_routes->find(layer_);
    DS_CHECK(it != ctx.opts.forced_routes->end() && int64_t(it->second.size()) == T * k,
             "forced routes: none or the wrong size for MoE layer {}", layer_);
    forced = it->second.data();
  }
  run_moe_route_cpu({.logits = logits.data(), .bias = w_->bias.ptr(), .topk_ids = ids.data(),
                     .topk_weights = weights.data(), .tokens = int(T), .num_experts = int(E), .top_k = int(k),
                     .num_groups = cfg_.num_expert_group, .topk_groups = cfg_.topk_group,
                     .renormalize = cfg_.renormalize, .scale = cfg_.routed_scaling_factor,
                     .biased_weights = cfg_.biased_weights, .forced_ids = forced});
  std::fill_n(y, T * hidden_, 0.0f);
  run_moe_experts_cpu({.x = x, .ids = ids.data(), .weights = weights.data(), .w1 = w1_.data(),
                       .w3 = w3_.data(), .w2 = w2_.data(), .y = y, .T = T, .D = hidden_,
                       .I = cfg_.intermediate_size, .E = E, .top_k = k});
  if (shared_) shared_->forward(T, x, y, /*accumulate=*/true);
  if (ctx.trace) {
    ctx.trace->route_ids[layer_] = std::move(ids);
    ctx.trace->route_weights[layer_] = std::move(weights);
  }
}

}  // namespace ds
