#include "model/shard_weights.h"

#include <algorithm>

#include "core/error.h"

namespace ds {
namespace {

// Rows [r0, r0 + n) of the first dimension.
HostTensor rows(const HostTensor& t, int64_t r0, int64_t n) {
  DS_CHECK(!t.shape.empty() && r0 >= 0 && r0 + n <= t.shape[0], "shard: rows {}..{} of a tensor of {}", r0, r0 + n,
           t.shape.empty() ? 0 : t.shape[0]);
  const int64_t width = t.shape[0] ? int64_t(t.data.size()) / t.shape[0] : 0;
  HostTensor o;
  o.shape = t.shape;
  o.shape[0] = n;
  o.data.assign(t.data.begin() + r0 * width, t.data.begin() + (r0 + n) * width);
  return o;
}

// Columns [c0, c0 + n) of a [rows, cols] matrix.
HostTensor cols(const HostTensor& t, int64_t c0, int64_t n) {
  DS_CHECK(t.shape.size() == 2 && c0 >= 0 && c0 + n <= t.shape[1], "shard: columns {}..{} of a matrix", c0, c0 + n);
  const int64_t R = t.shape[0], C = t.shape[1];
  HostTensor o;
  o.shape = {R, n};
  o.data.resize(size_t(R * n));
  for (int64_t r = 0; r < R; ++r) std::copy_n(t.data.begin() + r * C + c0, n, o.data.begin() + r * n);
  return o;
}

// Part `index` of `parts` equal parts of n things: {first, count}.
struct Part {
  int64_t begin, count;
};
Part part(int64_t n, int parts, int index) { return {n / parts * index, n / parts}; }

void shard_mlp(const MlpWeights<HostTensor>& w, MlpWeights<HostTensor>& o, int parts, int index) {
  const Part p = part(w.gate.shape.at(0), parts, index);
  o.gate = rows(w.gate, p.begin, p.count);
  o.up = rows(w.up, p.begin, p.count);
  o.down = cols(w.down, p.begin, p.count);
}

void shard_kda(const ModelConfig& c, const KdaWeights<HostTensor>& w, KdaWeights<HostTensor>& o, int tp, int i) {
  const int64_t K = c.kda.head_dim;
  const Part h = part(c.kda.num_heads, tp, i), ch{h.begin * K, h.count * K};
  o.q_proj = rows(w.q_proj, ch.begin, ch.count);
  o.k_proj = rows(w.k_proj, ch.begin, ch.count);
  o.v_proj = rows(w.v_proj, ch.begin, ch.count);
  o.q_conv = rows(w.q_conv, ch.begin, ch.count);
  o.k_conv = rows(w.k_conv, ch.begin, ch.count);
  o.v_conv = rows(w.v_conv, ch.begin, ch.count);
  o.a_log.shape = {1, 1, h.count, 1};  // [1, 1, H, 1]: one value per head
  o.a_log.data.assign(w.a_log.data.begin() + h.begin, w.a_log.data.begin() + h.begin + h.count);
  o.dt_bias = rows(w.dt_bias, ch.begin, ch.count);
  o.f_a_proj = w.f_a_proj;
  o.f_b_proj = rows(w.f_b_proj, ch.begin, ch.count);
  o.b_proj = rows(w.b_proj, h.begin, h.count);
  o.g_a_proj = w.g_a_proj;
  o.g_b_proj = rows(w.g_b_proj, ch.begin, ch.count);
  o.o_norm = w.o_norm;
  o.o_proj = cols(w.o_proj, ch.begin, ch.count);
}

void shard_mla(const ModelConfig& c, const MlaWeights<HostTensor>& w, MlaWeights<HostTensor>& o, int tp, int i) {
  const auto& m = c.mla;
  const Part h = part(m.num_heads, tp, i);
  const int64_t q_w = m.qk_head_dim(), kv_w = m.qk_nope_head_dim + m.v_head_dim, v_w = m.v_head_dim;
  o.q_proj = rows(w.q_proj, h.begin * q_w, h.count * q_w);
  o.kv_a_proj = w.kv_a_proj;
  o.kv_a_norm = w.kv_a_norm;
  o.kv_b_proj = rows(w.kv_b_proj, h.begin * kv_w, h.count * kv_w);
  o.o_proj = cols(w.o_proj, h.begin * v_w, h.count * v_w);
}

}  // namespace

ModelConfig shard_config(const ModelConfig& c, const ShardSpec& s) {
  ModelConfig o = c;
  if (s.tp > 1) {
    o.kda.num_heads /= s.tp;
    o.mla.num_heads /= s.tp;
    o.intermediate_size /= s.tp;
    o.tie_word_embeddings = false;
  }
  if (s.size > 1 && !s.ep) o.moe.intermediate_size /= s.size;
  return o;
}

HostWeights shard_host_weights(const ModelConfig& c, const HostWeights& w, const ShardSpec& s) {
  DS_CHECK(s.tp == 1 || s.tp == s.size, "shard: tp {} must be 1 or the group size {}", s.tp, s.size);
  const int ti = s.tp > 1 ? s.rank : 0;
  HostWeights o;
  o.embed = w.embed;
  o.final_norm = w.final_norm;
  const HostTensor& head = c.tie_word_embeddings ? w.embed : w.lm_head;
  if (s.tp > 1) {
    const Part v = part(c.vocab_size, s.tp, ti);
    o.lm_head = rows(head, v.begin, v.count);
  } else if (!c.tie_word_embeddings) {
    o.lm_head = w.lm_head;
  }
  o.layers.resize(w.layers.size());
  for (int l = 0; l < c.num_layers; ++l) {
    const auto& L = w.layers[size_t(l)];
    auto& O = o.layers[size_t(l)];
    O.input_norm = L.input_norm;
    O.post_norm = L.post_norm;
    if (c.is_kda(l)) shard_kda(c, L.kda, O.kda, s.tp, ti);
    else shard_mla(c, L.mla, O.mla, s.tp, ti);
    if (!c.is_moe(l)) {
      shard_mlp(L.mlp, O.mlp, s.tp, ti);
      continue;
    }
    O.moe.router = L.moe.router;
    O.moe.bias = L.moe.bias;
    O.moe.experts.resize(L.moe.experts.size());
    for (int e = 0; e < int(L.moe.experts.size()); ++e) {
      const auto& E = L.moe.experts[size_t(e)];
      if (!s.ep) shard_mlp(E, O.moe.experts[size_t(e)], s.size, s.rank);
      else if (s.expert_owner(e, c.moe.num_experts) == s.rank) O.moe.experts[size_t(e)] = E;
      // else: another rank's expert, left empty (MoeLayer skips it)
    }
    if (c.moe.num_shared_experts > 0) shard_mlp(L.moe.shared, O.moe.shared, s.size, s.rank);
  }
  return o;
}

}  // namespace ds
