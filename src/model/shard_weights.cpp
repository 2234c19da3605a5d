#include "model/shard_weights.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"

namespace ds {
namespace {

// Part `index` of `parts` equal parts of n things.
ShardSlice part(int axis, int64_t n, int parts, int index, int64_t unit = 1) {
  ShardSlice x;
  x.kind = ShardSlice::Kind::Part;
  x.axis = axis;
  x.begin = n / parts * index * unit;
  x.count = n / parts * unit;
  return x;
}
ShardSlice rows(int64_t n, int parts, int index, int64_t unit = 1) { return part(0, n, parts, index, unit); }
ShardSlice cols(int64_t n, int parts, int index, int64_t unit = 1) { return part(1, n, parts, index, unit); }

void shard_mlp(int64_t inter, MlpWeights<ShardSlice>& o, int parts, int index) {
  o.gate = rows(inter, parts, index);
  o.up = rows(inter, parts, index);
  o.down = cols(inter, parts, index);
}

void shard_kda(const ModelConfig& c, KdaWeights<ShardSlice>& o, int tp, int i) {
  const int64_t H = c.kda.num_heads, K = c.kda.head_dim;
  o.q_proj = o.k_proj = o.v_proj = rows(H, tp, i, K);
  o.q_conv = o.k_conv = o.v_conv = rows(H, tp, i, K);
  o.a_log = part(2, H, tp, i);  // [1, 1, H, 1]: one value per head
  o.dt_bias = rows(H, tp, i, K);
  o.f_b_proj = o.g_b_proj = rows(H, tp, i, K);
  o.b_proj = rows(H, tp, i);
  o.o_proj = cols(H, tp, i, K);
  // f_a_proj, g_a_proj (low rank) and o_norm: whole
}

void shard_mla(const ModelConfig& c, MlaWeights<ShardSlice>& o, int tp, int i) {
  const auto& m = c.mla;
  o.q_proj = rows(m.num_heads, tp, i, m.qk_head_dim());
  o.kv_b_proj = rows(m.num_heads, tp, i, m.qk_nope_head_dim + m.v_head_dim);
  o.o_proj = cols(m.num_heads, tp, i, m.v_head_dim);
  // kv_a_proj and kv_a_layernorm: whole (the latent is computed, and cached, on every rank)
}

// (outer, extent, inner) of dimension `axis` of a row-major shape.
void dims(const std::vector<int64_t>& shape, int axis, int64_t& outer, int64_t& extent, int64_t& inner) {
  DS_CHECK(axis >= 0 && axis < int(shape.size()), "shard: axis {} of a {}-d tensor", axis, shape.size());
  outer = inner = 1;
  for (int d = 0; d < axis; ++d) outer *= shape[size_t(d)];
  extent = shape[size_t(axis)];
  for (size_t d = size_t(axis) + 1; d < shape.size(); ++d) inner *= shape[d];
}

}  // namespace

ModelWeights<ShardSlice> shard_plan(const ModelConfig& c, const ShardSpec& s) {
  DS_CHECK(s.tp == 1 || s.tp == s.size, "shard: tp {} must be 1 or the group size {}", s.tp, s.size);
  const int ti = s.tp > 1 ? s.rank : 0;
  ModelWeights<ShardSlice> o;
  for_each_weight(c, o, [](const TensorSpec&, ShardSlice&) {});  // sizes the layers and expert lists
  if (s.tp > 1) o.lm_head = rows(c.vocab_size, s.tp, ti);
  for (int l = 0; l < c.num_layers; ++l) {
    auto& O = o.layers[size_t(l)];
    if (s.tp > 1) {
      if (c.is_kda(l)) shard_kda(c, O.kda, s.tp, ti);
      else shard_mla(c, O.mla, s.tp, ti);
    }
    if (!c.is_moe(l)) {
      if (s.tp > 1) shard_mlp(c.intermediate_size, O.mlp, s.tp, ti);
      continue;
    }
    for (int e = 0; e < int(O.moe.experts.size()); ++e) {
      auto& E = O.moe.experts[size_t(e)];
      if (!s.ep) {
        if (s.size > 1) shard_mlp(c.moe.intermediate_size, E, s.size, s.rank);
      } else if (s.expert_owner(e, c.moe.num_experts) != s.rank) {
        E.gate.kind = E.up.kind = E.down.kind = ShardSlice::Kind::Empty;  // another rank's expert
      }
    }
    if (c.moe.num_shared_experts > 0 && s.size > 1)
      shard_mlp(int64_t(c.moe.intermediate_size) * c.moe.num_shared_experts, O.moe.shared, s.size, s.rank);
  }
  return o;
}

std::vector<int64_t> sliced_shape(const std::vector<int64_t>& shape, const ShardSlice& x) {
  if (x.kind == ShardSlice::Kind::Whole) return shape;
  if (x.kind == ShardSlice::Kind::Empty) return {0};
  int64_t outer = 0, extent = 0, inner = 0;
  dims(shape, x.axis, outer, extent, inner);
  DS_CHECK(x.begin >= 0 && x.count >= 0 && x.begin + x.count <= extent, "shard: elements {}..{} of a dimension of {}",
           x.begin, x.begin + x.count, extent);
  std::vector<int64_t> out = shape;
  out[size_t(x.axis)] = x.count;
  return out;
}

void copy_slice(const void* src, const std::vector<int64_t>& shape, size_t esize, const ShardSlice& x, void* dst) {
  const auto out = sliced_shape(shape, x);
  if (x.kind == ShardSlice::Kind::Empty) return;
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  if (x.kind == ShardSlice::Kind::Whole) {
    std::memcpy(dst, src, size_t(n) * esize);
    return;
  }
  int64_t outer = 0, extent = 0, inner = 0;
  dims(shape, x.axis, outer, extent, inner);
  const size_t run = size_t(x.count * inner) * esize;
  for (int64_t o = 0; o < outer; ++o)
    std::memcpy(static_cast<char*>(dst) + size_t(o) * run,
                static_cast<const char*>(src) + size_t((o * extent + x.begin) * inner) * esize, run);
}

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
  ModelWeights<ShardSlice> plan = shard_plan(c, s);
  // the full model's tensors, their slices and the rank's tensors, zipped in for_each_weight's fixed order
  std::vector<const HostTensor*> in;
  std::vector<const ShardSlice*> sl;
  std::vector<HostTensor*> out;
  HostWeights o;
  // (for_each_weight sizes its argument's lists, which `w` already has: nothing of it changes)
  for_each_weight(c, const_cast<HostWeights&>(w), [&](const TensorSpec&, HostTensor& t) { in.push_back(&t); });
  for_each_weight(c, plan, [&](const TensorSpec&, ShardSlice& x) { sl.push_back(&x); });
  for_each_weight(c, o, [&](const TensorSpec&, HostTensor& t) { out.push_back(&t); });
  DS_CHECK(in.size() == sl.size() && in.size() == out.size(), "shard: tensor lists differ");
  for (size_t i = 0; i < in.size(); ++i) {
    if (sl[i]->kind == ShardSlice::Kind::Empty) continue;  // another rank's expert, left empty (MoeLayer skips it)
    const HostTensor& t = *in[i];
    HostTensor& r = *out[i];
    r.shape = sliced_shape(t.shape, *sl[i]);
    int64_t n = 1;
    for (int64_t d : r.shape) n *= d;
    r.data.resize(size_t(n));
    copy_slice(t.data.data(), t.shape, sizeof(float), *sl[i], r.data.data());
  }
  // a tied lm_head: the rank's vocabulary rows of the embedding (shard_config unties it)
  if (s.tp > 1 && c.tie_word_embeddings) {
    const HostTensor& head = w.embed;
    o.lm_head.shape = sliced_shape(head.shape, plan.lm_head);
    o.lm_head.data.resize(size_t(o.lm_head.shape[0] * o.lm_head.shape[1]));
    copy_slice(head.data.data(), head.shape, sizeof(float), plan.lm_head, o.lm_head.data.data());
  }
  return o;
}

}  // namespace ds
