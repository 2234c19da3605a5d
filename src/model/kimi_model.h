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
#include "dist/communicator.h"
#include "dist/parallel_config.h"
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

// A rank of a parallel group (docs/PARALLEL.md): which part of the model it holds and the group's
// communicator. The default is the whole model alone.
struct ModelShard {
  ShardSpec spec;
  Communicator* comm = nullptr;  // needed when spec.size > 1
};

class KimiModel {
 public:
  // A rank's model: `c` its shard_config and `w` its shard_host_weights (model/shard_weights.h). The
  // layers run unchanged on the rank's heads and columns; forward() then all-reduces each split block's
  // output (attention and dense MLP when spec.tp > 1, every MoE block when spec.size > 1) and gathers
  // the vocabulary-split logits, so every rank's residual stream and logits are the whole model's.
  KimiModel(const ModelConfig& c, const HostWeights& w, ModelShard shard = {});

  const ModelConfig& config() const { return cfg_; }

  // Runs the batch; *logits receives [batch.num_logit_rows(), vocab]. Each slice's KDA slot is first
  // initialised as its state_init says (zero, copy of another slot, restore of a snapshot), in slice
  // order; after the layers, slices with save_snapshot >= 0 save their slot. Throws ds::Error for an
  // inconsistent batch (validate_batch: offsets, slots, state init, snapshots, pages, token ids).
  void forward(const ForwardBatch& batch, KdaStateStore& kda, MlaLatentCache& mla, std::vector<float>* logits,
               const ForwardOptions& opts = {}, ForwardTrace* trace = nullptr) const;

  // The batch checks forward() starts with (validate_batch against these caches); throws ds::Error.
  void validate(const ForwardBatch& batch, const KdaStateStore& kda, const MlaLatentCache& mla) const;

 private:
  void reduce(std::vector<float>& out) const;
  void lm_head(const float* x, int64_t rows, std::vector<float>* logits) const;

  ModelConfig cfg_;
  const HostWeights* w_;
  ModelShard shard_;
  std::vector<std::variant<KdaLayer, MlaLayer>> attn_;
  std::vector<std::variant<DenseMlp, MoeLayer>> ffn_;
};

}  // namespace ds
