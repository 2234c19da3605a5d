// Helpers of the GPU model tests that compare two computations of one model (test_tp_cuda.cpp,
// test_prefix_hit_48b.cpp): pinned MoE routes (the same pseudo-random experts for every run, so near-tied
// choices cannot flip between the two) and a model's logits on the host.
#pragma once
#include <cstdint>
#include <vector>

#include "config/model_config.h"
#include "core/splitmix.h"
#include "cuda/cuda_check.h"
#include "cuda/cuda_model.h"
#include "model/step_context.h"

namespace ds::gpu::test {

// top_k distinct experts for every MoE layer and position 0..positions-1, from a hash of (layer, position):
// h, h + 37, h + 2·37, ... modulo the expert count (37 is odd, so distinct for power-of-two counts).
inline RouteIds pinned_routes(const ModelConfig& c, int positions) {
  RouteIds r;
  const int k = c.moe.top_k;
  for (int l = 0; l < c.num_layers; ++l) {
    if (!c.is_moe(l)) continue;
    std::vector<int32_t>& v = r[l];
    v.resize(size_t(positions) * size_t(k));
    for (int p = 0; p < positions; ++p) {
      const uint64_t h = splitmix64(uint64_t(l) * 7919u + uint64_t(p));
      for (int j = 0; j < k; ++j) v[size_t(p) * size_t(k) + size_t(j)] = int32_t((h + uint64_t(j) * 37u) % uint64_t(c.moe.num_experts));
    }
  }
  return r;
}

// The logits rows of m's last forward (waits for it).
inline std::vector<float> model_logits(const CudaModel& m, int vocab) {
  std::vector<float> h(size_t(m.num_logit_rows()) * size_t(vocab));
  DS_CUDA_CHECK(cudaStreamSynchronize(m.stream()));
  DS_CUDA_CHECK(cudaMemcpy(h.data(), m.logits(), h.size() * 4, cudaMemcpyDeviceToHost));
  return h;
}

}  // namespace ds::gpu::test
