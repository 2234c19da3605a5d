// The checkpoint's tensor inventory for a ModelConfig: one name/shape table shared by every backend
// (spec §2; the released checkpoint's Hugging Face names).
//
// The weight structs are templates over the tensor handle T, so the CPU backend holds
// ModelWeights<HostTensor> (fp32 host copies) and a GPU backend can hold ModelWeights<DeviceTensor>
// filled from the same table: for_each_weight() visits every tensor the config requires, with its
// checkpoint name and shape, paired with the struct field that receives it.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "config/model_config.h"
#include "core/dtype.h"

namespace ds {

class Checkpoint;

struct TensorSpec {
  std::string name;            // checkpoint name, e.g. "model.layers.3.self_attn.kv_b_proj.weight"
  std::vector<int64_t> shape;  // PyTorch shape; Linear weights are [out, in]
};

// Shapes below: hidden = config.hidden_size, H/K/W = KDA heads, head_dim, conv kernel;
// Hm/dn/dr/dv/R = MLA heads, qk_nope, qk_rope, v_head_dim, kv_lora_rank.
template <class T>
struct KdaWeights {
  T q_proj, k_proj, v_proj;  // [H·K, hidden]
  T q_conv, k_conv, v_conv;  // [H·K, 1, W] depthwise taps, the last one takes the current token
  T a_log;                   // [1, 1, H, 1]
  T dt_bias;                 // [H·K]
  T f_a_proj;                // [K, hidden]   forget gate, low rank (no activation between)
  T f_b_proj;                // [H·K, K]
  T b_proj;                  // [H, hidden]   β = sigmoid(b_proj x)
  T g_a_proj;                // [K, hidden]   output gate, low rank
  T g_b_proj;                // [H·K, K]
  T o_norm;                  // [K] shared by all heads
  T o_proj;                  // [hidden, H·K]
};

template <class T>
struct MlaWeights {
  T q_proj;     // [Hm·(dn+dr), hidden]
  T kv_a_proj;  // [R + dr, hidden]  (kv_a_proj_with_mqa: latent then the shared 64-wide key)
  T kv_a_norm;  // [R]               (kv_a_layernorm, eps 1e-6)
  T kv_b_proj;  // [Hm·(dn+dv), R]   per head: dn rows of W_UK then dv rows of W_UV
  T o_proj;     // [hidden, Hm·dv]
};

template <class T>
struct MlpWeights {
  T gate;  // [I, hidden]  (experts: w1)
  T up;    // [I, hidden]  (experts: w3)
  T down;  // [hidden, I]  (experts: w2)
};

template <class T>
struct MoeWeights {
  T router;                            // [E, hidden]  (block_sparse_moe.gate.weight)
  T bias;                              // [E]          (gate.e_score_correction_bias)
  std::vector<MlpWeights<T>> experts;  // E experts, I = moe_intermediate_size
  MlpWeights<T> shared;                // I = moe_intermediate_size · num_shared_experts; unused when 0
};

template <class T>
struct LayerWeights {
  T input_norm;  // [hidden]
  T post_norm;   // [hidden]
  KdaWeights<T> kda;  // filled when config.is_kda(layer)
  MlaWeights<T> mla;  // filled otherwise
  MlpWeights<T> mlp;  // filled when the FFN is dense
  MoeWeights<T> moe;  // filled when the FFN is MoE
};

template <class T>
struct ModelWeights {
  T embed;       // [vocab, hidden]
  T final_norm;  // [hidden]
  T lm_head;     // [vocab, hidden]; not in the checkpoint when tie_word_embeddings (use embed)
  std::vector<LayerWeights<T>> layers;
};

// Calls fn(const TensorSpec&, T&) for every tensor `c` requires (sizing w.layers and the expert lists
// first), in a fixed order: globals, then layer by layer.
template <class T, class Fn>
void for_each_weight(const ModelConfig& c, ModelWeights<T>& w, Fn&& fn) {
  using V = std::vector<int64_t>;
  const int64_t hid = c.hidden_size;
  fn(TensorSpec{"model.embed_tokens.weight", V{c.vocab_size, hid}}, w.embed);
  fn(TensorSpec{"model.norm.weight", V{hid}}, w.final_norm);
  if (!c.tie_word_embeddings) fn(TensorSpec{"lm_head.weight", V{c.vocab_size, hid}}, w.lm_head);
  w.layers.resize(size_t(c.num_layers));
  auto mlp = [&](const std::string& p, const char* g, const char* u, const char* d, int64_t inter,
                 MlpWeights<T>& m) {
    fn(TensorSpec{p + g + ".weight", V{inter, hid}}, m.gate);
    fn(TensorSpec{p + u + ".weight", V{inter, hid}}, m.up);
    fn(TensorSpec{p + d + ".weight", V{hid, inter}}, m.down);
  };
  for (int l = 0; l < c.num_layers; ++l) {
    auto& L = w.layers[size_t(l)];
    const std::string p = "model.layers." + std::to_string(l) + ".";
    fn(TensorSpec{p + "input_layernorm.weight", V{hid}}, L.input_norm);
    fn(TensorSpec{p + "post_attention_layernorm.weight", V{hid}}, L.post_norm);
    const std::string a = p + "self_attn.";
    if (c.is_kda(l)) {
      const int64_t H = c.kda.num_heads, K = c.kda.head_dim, HK = H * K, W = c.kda.conv_kernel;
      auto& k = L.kda;
      fn(TensorSpec{a + "q_proj.weight", V{HK, hid}}, k.q_proj);
      fn(TensorSpec{a + "k_proj.weight", V{HK, hid}}, k.k_proj);
      fn(TensorSpec{a + "v_proj.weight", V{HK, hid}}, k.v_proj);
      fn(TensorSpec{a + "q_conv1d.weight", V{HK, 1, W}}, k.q_conv);
      fn(TensorSpec{a + "k_conv1d.weight", V{HK, 1, W}}, k.k_conv);
      fn(TensorSpec{a + "v_conv1d.weight", V{HK, 1, W}}, k.v_conv);
      fn(TensorSpec{a + "A_log", V{1, 1, H, 1}}, k.a_log);
      fn(TensorSpec{a + "dt_bias", V{HK}}, k.dt_bias);
      fn(TensorSpec{a + "f_a_proj.weight", V{K, hid}}, k.f_a_proj);
      fn(TensorSpec{a + "f_b_proj.weight", V{HK, K}}, k.f_b_proj);
      fn(TensorSpec{a + "b_proj.weight", V{H, hid}}, k.b_proj);
      fn(TensorSpec{a + "g_a_proj.weight", V{K, hid}}, k.g_a_proj);
      fn(TensorSpec{a + "g_b_proj.weight", V{HK, K}}, k.g_b_proj);
      fn(TensorSpec{a + "o_norm.weight", V{K}}, k.o_norm);
      fn(TensorSpec{a + "o_proj.weight", V{hid, HK}}, k.o_proj);
    } else {
      const auto& m = c.mla;
      const int64_t Hm = m.num_heads, R = m.kv_lora_rank;
      auto& x = L.mla;
      fn(TensorSpec{a + "q_proj.weight", V{Hm * m.qk_head_dim(), hid}}, x.q_proj);
      fn(TensorSpec{a + "kv_a_proj_with_mqa.weight", V{R + m.qk_rope_head_dim, hid}}, x.kv_a_proj);
      fn(TensorSpec{a + "kv_a_layernorm.weight", V{R}}, x.kv_a_norm);
      fn(TensorSpec{a + "kv_b_proj.weight", V{Hm * (m.qk_nope_head_dim + m.v_head_dim), R}}, x.kv_b_proj);
      fn(TensorSpec{a + "o_proj.weight", V{hid, Hm * m.v_head_dim}}, x.o_proj);
    }
    if (c.is_moe(l)) {
      const std::string b = p + "block_sparse_moe.";
      auto& m = L.moe;
      fn(TensorSpec{b + "gate.weight", V{c.moe.num_experts, hid}}, m.router);
      fn(TensorSpec{b + "gate.e_score_correction_bias", V{c.moe.num_experts}}, m.bias);
      m.experts.resize(size_t(c.moe.num_experts));
      for (int e = 0; e < c.moe.num_experts; ++e)
        mlp(b + "experts." + std::to_string(e) + ".", "w1", "w3", "w2", c.moe.intermediate_size,
            m.experts[size_t(e)]);
      if (c.moe.num_shared_experts > 0)
        mlp(b + "shared_experts.", "gate_proj", "up_proj", "down_proj",
            int64_t(c.moe.intermediate_size) * c.moe.num_shared_experts, m.shared);
    } else {
      mlp(p + "mlp.", "gate_proj", "up_proj", "down_proj", c.intermediate_size, L.mlp);
    }
  }
}

// The full table for `c`.
std::vector<TensorSpec> weight_specs(const ModelConfig& c);

// Scale tensors a quantized checkpoint may carry beside a weight "X.weight": "X.weight_scale" (the
// factor) or "X.weight_scale_inv" (the block FP8 release format's name; despite it, also a factor). The
// table recognises and names them; check_checkpoint accepts them when config.json has a
// quantization_config (model/quant.h validates them) and refuses them otherwise.
struct ScaleTensor {
  std::string name;    // e.g. "model.layers.0.self_attn.q_proj.weight_scale_inv"
  std::string weight;  // the weight it scales, e.g. "model.layers.0.self_attn.q_proj.weight"
  bool inverse = false;
};
// The scale tensor names a weight may have (none unless the name ends in ".weight").
std::vector<ScaleTensor> scale_names_for(const std::string& weight);
// The scale tensors `ck` holds beside the weights of `c`'s table, in table order.
std::vector<ScaleTensor> find_scale_tensors(const ModelConfig& c, const Checkpoint& ck);

// Whether a backend can load a checkpoint tensor of dtype `t` for the table entry `spec` (a per-tensor
// decision: each weight's destination has its own dtype). The default takes BF16, F16 and F32.
using DTypeAccepts = bool (*)(const TensorSpec& spec, DType t);
bool float_dtypes(const TensorSpec& spec, DType t);

// Compares a checkpoint with weight_specs(c): missing, unexpected and mis-shaped tensors, tensors of a
// dtype `accepts` refuses (F8_E4M3 Linear weights are accepted when c.quant says the checkpoint is
// quantized), and scale tensors without a quantization_config are all listed in one ds::Error (the
// first few of each kind by name); then a quantized checkpoint's scales are checked (find_quantized).
// In an INT4 checkpoint (c.quant.int4()) a weight X.weight may be absent when X.weight_packed is
// there: its companion tensors are expected and model/quant_int4.h's find_int4 checks them.
void check_checkpoint(const ModelConfig& c, const Checkpoint& ck, DTypeAccepts accepts = float_dtypes);

}  // namespace ds
