// Typed, validated view of a Hugging Face `config.json` with model_type "kimi_linear".
#pragma once
#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "config/quant_config.h"

namespace ds {

enum class AttnKind : uint8_t { KDA, MLA };
enum class FfnKind : uint8_t { Dense, MoE };

struct KdaConfig {
  int num_heads = 0;        // linear_attn_config.num_heads
  int head_dim = 0;         // K = V = head_dim
  int conv_kernel = 0;      // short_conv_kernel_size
  int qk_dim() const { return num_heads * head_dim; }
};

struct MlaConfig {
  int num_heads = 0;        // num_attention_heads
  int kv_lora_rank = 0;     // latent width (512)
  int qk_nope_head_dim = 0; // 128
  int qk_rope_head_dim = 0; // 64 (unrotated "pe" part; NoPE)
  int v_head_dim = 0;       // 128
  int qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  int latent_dim() const { return kv_lora_rank + qk_rope_head_dim; }  // cached values per token (576)
};

struct MoeConfig {
  int num_experts = 0;
  int top_k = 0;                  // num_experts_per_token
  int num_shared_experts = 0;
  int intermediate_size = 0;      // moe_intermediate_size
  int num_expert_group = 1;
  int topk_group = 1;
  bool renormalize = true;
  float routed_scaling_factor = 1.0f;
  // The released remote code adds the correction bias in place and so weights experts by the
  // biased scores; vLLM/SGLang/DeepSeek use the unbiased scores. Off (unbiased) by default.
  bool biased_weights = false;
};

struct ModelConfig {
  int vocab_size = 0;
  int hidden_size = 0;
  int num_layers = 0;
  int intermediate_size = 0;      // dense MLP
  float rms_norm_eps = 1e-5f;
  float kv_a_norm_eps = 1e-6f;    // kv_a_layernorm is built without eps in the reference code
  bool tie_word_embeddings = false;
  int bos_token_id = -1;
  std::vector<int> eos_token_ids; // eos_token_id (int or list)
  int pad_token_id = -1;
  int64_t max_position_embeddings = 1048576;  // model_max_length
  std::string torch_dtype = "bfloat16";

  KdaConfig kda;
  MlaConfig mla;
  MoeConfig moe;
  QuantConfig quant;               // quantization_config (none for a bf16 checkpoint)
  int first_k_dense_replace = 0;
  int moe_layer_freq = 1;

  std::vector<AttnKind> attn;     // per layer, 0-based
  std::vector<FfnKind> ffn;       // per layer, 0-based

  bool is_kda(int layer) const { return attn[layer] == AttnKind::KDA; }
  bool is_moe(int layer) const { return ffn[layer] == FfnKind::MoE; }
  int num_kda_layers() const;
  int num_mla_layers() const;
  // Index of `layer` among layers of the same attention kind (its KDA slot / MLA cache index).
  int attn_index(int layer) const;

  // Parse and validate. Throws ds::Error naming the offending field.
  static ModelConfig from_json(const nlohmann::json& j);
  static ModelConfig from_file(const std::string& path);
  // Checks invariants; throws ds::Error naming the field.
  void validate() const;
  std::string summary() const;
};

}  // namespace ds
