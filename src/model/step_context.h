// What the CPU layers see of one forward pass: the ForwardBatch plus the per-sequence arrays derived
// from it once (token offsets, state slots, context lengths), the numerical-path options, and an
// optional trace for layer-by-layer comparisons against golden dumps.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <vector>

#include "kernels/mla/op.h"
#include "model/forward_batch.h"

namespace ds {

// MoE layer -> [T, top_k] expert ids (a forward's routing, or routing to impose on one)
using RouteIds = std::map<int, std::vector<int32_t>>;

struct ForwardOptions {
  bool kda_chunked_prefill = true;    // multi-token slices use the chunked KDA form (false: recurrence)
  bool mla_absorbed_prefill = false;  // multi-token slices use absorbed MLA too (false: expanded K/V)
  // Expanded MLA prefill: context positions expanded and attended per piece (>= 1), pieces merged exactly
  int64_t mla_context_piece = kernels::kMlaContextPieceDefault;
  // MoE layer -> [T, top_k] experts to use instead of the router's choice (numerical tests only)
  const RouteIds* forced_routes = nullptr;
};

// Filled when passed to KimiModel::forward (tests, debugging).
struct ForwardTrace {
  std::vector<std::vector<float>> hidden;  // [num_layers + 1] of [T, hidden]: after the embedding and
                                           // after each decoder layer (the residual stream)
  RouteIds route_ids;                               // MoE layer → [T, top_k] chosen experts
  std::map<int, std::vector<float>> route_weights;  // MoE layer → [T, top_k] their weights
};

struct StepContext {
  StepContext(const ForwardBatch& b, const ForwardOptions& o) : batch(b), opts(o) {}
  const ForwardBatch& batch;
  ForwardOptions opts;
  int64_t num_tokens = 0;
  std::vector<int32_t> cu_seqlens;    // [N + 1] token offsets of the slices
  std::vector<int32_t> slots;         // [N] KDA state slots
  std::vector<int64_t> context_lens;  // [N] tokens cached before this step
  ForwardTrace* trace = nullptr;

  int num_seqs() const { return int(slots.size()); }
  int32_t seq_len(int s) const { return cu_seqlens[size_t(s) + 1] - cu_seqlens[size_t(s)]; }
};

}  // namespace ds
