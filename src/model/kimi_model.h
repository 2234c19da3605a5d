// Kimi-Linear on the CPU: the wiring of the decoder from the config (which layers are KDA or MLA, dense
// or MoE) and one forward over a ForwardBatch. Weights are borrowed (the owner keeps them alive); KDA
// state slots and MLA latents live in the cache objects passed to forward().
//
//   h = embed(ids)
//   for each layer: h += Attn(rmsnorm_in(h)); h += FFN(rmsnorm_post(h))
//   logits = lm_head(rmsnorm_final(h)) for the rows the slices ask for
// Everything is fp32 (weights converted once), so results match the float64 reference to ~1e-6.
#pragma once
#include <cstdint>
#include <variant>
#include <vector>

#include "config/model_config.h"
#include "model/dense_mlp.h"
#include "model/forward_batch.h"
#include "model/host_weights.h"
#include "model/kda_layer.h"
#include "model/kda_state.h"
#include "model/mla_cache.h"
#include "model/mla_layer.h"
#include "model/moe_layer.h"
#include "model/step_context.h"

namespace ds {

class KimiModel {
 public:
  KimiModel(const ModelConfig& c, const HostWeights& w);

  const ModelConfig& config() const { return cfg_; }

  // Runs the batch; *logits receives [batch.num_logit_rows(), vocab]. Each slice's KDA slot is first
  // initialised as its state_init says (zero, copy of another slot, restore of a snapshot), in slice
  // order; after the layers, slices with save_snapshot >= 0 save their slot. Throws ds::Error for an
  // inconsistent batch (validate_batch: offsets, slots, state init, snapshots, pages, token ids).
  void forward(const ForwardBatch& batch, KdaStateStore& kda, MlaLatentCache& mla, std::vector<float>* logits,
               const ForwardOptions& opts = {}, ForwardTrace* trace = nullptr) const;

 private:
  void validate(const ForwardBatch& batch, const KdaStateStore& kda, const MlaLatentCache& mla) const;

  ModelConfig cfg_;
  const HostWeights* w_;
  std::vector<std::variant<KdaLayer, MlaLayer>> attn_;
  std::vector<std::variant<DenseMlp, MoeLayer>> ffn_;
};

}  // namespace ds
