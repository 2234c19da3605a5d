// NoPE MLA attention on the GPU (spec 5; the CPU twin is model/mla_layer.h): the packed [q | kv_a]
// projection, the latent-cache write (kv_a norm), then per row kind: decodes as absorbed queries
// [q_lat ; q_pe] against the paged latents (split-K), prefill chunks against their keys/values
// expanded from the cache through kv_b_proj into the fixed expansion of MlaExpansion::key_rows rows
// (mla_prefill_rows.cpp: sequences in groups that fit it, a longer context piece by piece with an exact
// log-sum-exp merge); or all rows through the simple reference kernel. o_proj adds into the residual.
#pragma once
#include "cuda/layers/layer_step.h"

namespace ds::gpu {

class MlaLayer final : public LayerPart {
 public:
  // layer: the model's layer index; mla_index: its index among MLA layers (its pages in DeviceCaches).
  MlaLayer(const ModelConfig& c, DType act, const MlaLayerWeights& w, int layer, int mla_index);
  void forward(const LayerStep& s, LayerInput in) const override;

 private:
  // q_lat[t, h] = W_UK^h^T q_nope[t, h] for rows [0, M), written with row stride ld_y and head stride hs_y.
  void absorb_queries(const LayerStep& s, int M, void* y, int64_t ld_y, int64_t hs_y) const;
  // out[t, h] = W_UV^h o_lat[t, h] for rows [0, M) into attn_o.
  void unabsorb_values(const LayerStep& s, int M) const;
  void reference_rows(const LayerStep& s, void* cache) const;
  void decode_rows(const LayerStep& s, void* cache) const;
  void prefill_rows(const LayerStep& s, void* cache) const;
  void prefill_group(const LayerStep& s, void* cache, const StepMeta::PrefillGroup& g) const;
  void prefill_pieces(const LayerStep& s, void* cache, const StepMeta::PrefillGroup& g) const;
  // x.kv rows [0, rows) = x.lat rows [0, rows) . kv_b^T (the expansion's keys/values)
  void expand_keys(const LayerStep& s, int rows) const;
  // The attention of prefill queries (sequences from seq0) over the expansion, whose row 0 is key row
  // key0 of pre_cu_k: pointers and strides; the caller sets the sequences, window and outputs.
  void attend(const LayerStep& s, int seq0, int num_seqs, int key0, int max_q, int k_begin, int k_end,
              float* lse) const;

  MlaLayerWeights w_;
  int index_;
  int hid_, Hm_, R_, dn_, dr_, dv_, dq_, PM_;
  float scale_;
};

}  // namespace ds::gpu
