#include "config/model_config.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"

namespace ds {
namespace {

using json = nlohmann::json;

// Upper bounds on sizes: far above any released model, low enough that products of them (weight
// shapes, per-layer tables) stay well inside int64 and a hostile config.json cannot ask for
// terabytes before the checkpoint is even opened.
constexpr int64_t kMaxLayers = 1024;
constexpr int64_t kMaxHidden = 1 << 17;        // hidden_size
constexpr int64_t kMaxVocab = 1 << 24;         // vocab_size
constexpr int64_t kMaxHeads = 1024;            // attention / KDA heads
constexpr int64_t kMaxHeadDim = 4096;          // per-head widths, kv_lora_rank
constexpr int64_t kMaxIntermediate = 1 << 20;  // MLP / expert widths
constexpr int64_t kMaxExperts = 4096;
constexpr int64_t kMaxConvKernel = 64;
constexpr int64_t kMaxPositions = int64_t(1) << 40;
constexpr int64_t kInt32Max = 2147483647;

// `v` as an integer within [lo, hi]; a float (even 256.0), a string or an out-of-range value is
// an error naming the field.
int64_t checked_int(const json& v, const std::string& name, int64_t lo, int64_t hi) {
  if (!v.is_number_integer()) fail("config.json: field '{}' must be an integer, got {}", name, v.dump());
  const bool fits = !v.is_number_unsigned() || v.get<uint64_t>() <= uint64_t(std::numeric_limits<int64_t>::max());
  if (!fits || v.get<int64_t>() < lo || v.get<int64_t>() > hi)
    fail("config.json: field '{}' = {} is outside {}..{}", name, v.dump(), lo, hi);
  return v.get<int64_t>();
}

// An integer field in [lo, hi]: required when `def` is empty, else `def` when absent or null.
int64_t int_field(const json& j, const char* key, std::optional<int64_t> def, int64_t lo, int64_t hi,
                  const char* where = "") {
  if (!j.contains(key) || j[key].is_null()) {
    if (!def) fail("config.json: missing required field '{}{}'", where, key);
    return *def;
  }
  return checked_int(j[key], fmt::format("{}{}", where, key), lo, hi);
}

// A floating-point field: a finite number in [lo, hi] (integers are accepted).
float float_field(const json& j, const char* key, float def, double lo, double hi) {
  if (!j.contains(key) || j[key].is_null()) return def;
  const auto& v = j[key];
  if (!v.is_number()) fail("config.json: field '{}' must be a number, got {}", key, v.dump());
  const double d = v.get<double>();
  if (!std::isfinite(d) || d < lo || d > hi) fail("config.json: field '{}' = {} is outside {}..{}", key, v.dump(), lo, hi);
  return float(d);
}

template <typename T>
T get_opt(const json& j, const char* key, T def, const char* where = "") {
  if (!j.contains(key) || j[key].is_null()) return def;
  try {
    return j[key].get<T>();
  } catch (const json::exception&) {
    fail("config.json: field '{}{}' has the wrong type ({})", where, key, j[key].dump());
  }
}

std::vector<int> layer_list(const json& lac, const char* key) {
  if (!lac.contains(key)) fail("config.json: missing 'linear_attn_config.{}'", key);
  const auto& v = lac[key];
  if (!v.is_array()) fail("config.json: 'linear_attn_config.{}' must be a list of layer numbers", key);
  std::vector<int> out;
  for (size_t i = 0; i < v.size(); ++i)
    out.push_back(int(checked_int(v[i], fmt::format("linear_attn_config.{}[{}]", key, i), -kInt32Max - 1, kInt32Max)));
  return out;
}

}  // namespace

int ModelConfig::num_kda_layers() const {
  return int(std::count(attn.begin(), attn.end(), AttnKind::KDA));
}
int ModelConfig::num_mla_layers() const {
  return int(std::count(attn.begin(), attn.end(), AttnKind::MLA));
}
int ModelConfig::attn_index(int layer) const {
  int idx = 0;
  for (int i = 0; i < layer; ++i)
    if (attn[i] == attn[layer]) ++idx;
  return idx;
}

ModelConfig ModelConfig::from_json(const json& j) {
  if (!j.is_object()) fail("config.json: top level is not a JSON object");
  ModelConfig c;
  auto mt = get_opt<std::string>(j, "model_type", "");
  if (mt != "kimi_linear")
    fail("config.json: model_type is '{}', expected 'kimi_linear'", mt);
  c.vocab_size = int(int_field(j, "vocab_size", {}, 1, kMaxVocab));
  c.hidden_size = int(int_field(j, "hidden_size", {}, 1, kMaxHidden));
  c.num_layers = int(int_field(j, "num_hidden_layers", {}, 1, kMaxLayers));
  c.intermediate_size = int(int_field(j, "intermediate_size", 0, 0, kMaxIntermediate));
  c.rms_norm_eps = float_field(j, "rms_norm_eps", 1e-5f, 0.0, 1.0);
  c.tie_word_embeddings = get_opt<bool>(j, "tie_word_embeddings", false);
  c.bos_token_id = int(int_field(j, "bos_token_id", -1, -1, kInt32Max));
  c.pad_token_id = int(int_field(j, "pad_token_id", -1, -1, kInt32Max));
  if (j.contains("eos_token_id") && !j["eos_token_id"].is_null()) {
    const auto& e = j["eos_token_id"];
    if (e.is_array()) {
      for (size_t i = 0; i < e.size(); ++i)
        c.eos_token_ids.push_back(int(checked_int(e[i], fmt::format("eos_token_id[{}]", i), 0, kInt32Max)));
    } else {
      c.eos_token_ids.push_back(int(int_field(j, "eos_token_id", {}, 0, kInt32Max)));
    }
  }
  c.max_position_embeddings =
      int_field(j, "model_max_length", int_field(j, "max_position_embeddings", 1048576, 1, kMaxPositions), 1,
                kMaxPositions);
  c.torch_dtype = get_opt<std::string>(j, "dtype", get_opt<std::string>(j, "torch_dtype", "bfloat16"));

  // Unsupported knobs: reject rather than compute something else.
  if (j.contains("q_lora_rank") && !j["q_lora_rank"].is_null())
    fail("config.json: q_lora_rank = {} is not supported (Kimi-Linear uses null: a plain q_proj)",
         j["q_lora_rank"].dump());
  if (!get_opt<bool>(j, "mla_use_nope", true))
    fail("config.json: mla_use_nope = false (rotary MLA) is not supported");
  if (int_field(j, "num_nextn_predict_layers", 0, 0, kMaxLayers) != 0)
    fail("config.json: num_nextn_predict_layers != 0 (MTP layers) is not supported");
  auto act = get_opt<std::string>(j, "hidden_act", "silu");
  if (act != "silu") fail("config.json: hidden_act '{}' is not supported (only 'silu')", act);
  auto router = get_opt<std::string>(j, "moe_router_activation_func", "sigmoid");
  if (router != "sigmoid")
    fail("config.json: moe_router_activation_func '{}' is not supported (only 'sigmoid')", router);

  // MLA
  c.mla.num_heads = int(int_field(j, "num_attention_heads", {}, 0, kMaxHeads));
  int kv_heads = int(int_field(j, "num_key_value_heads", c.mla.num_heads, 0, kMaxHeads));
  if (kv_heads != c.mla.num_heads)
    fail("config.json: num_key_value_heads ({}) != num_attention_heads ({}) is not supported for MLA",
         kv_heads, c.mla.num_heads);
  c.mla.kv_lora_rank = int(int_field(j, "kv_lora_rank", {}, 0, kMaxHeadDim));
  c.mla.qk_nope_head_dim = int(int_field(j, "qk_nope_head_dim", {}, 0, kMaxHeadDim));
  c.mla.qk_rope_head_dim = int(int_field(j, "qk_rope_head_dim", {}, 0, kMaxHeadDim));
  c.mla.v_head_dim = int(int_field(j, "v_head_dim", {}, 0, kMaxHeadDim));

  // KDA
  if (!j.contains("linear_attn_config") || !j["linear_attn_config"].is_object())
    fail("config.json: missing 'linear_attn_config' object");
  const auto& lac = j["linear_attn_config"];
  c.kda.num_heads = int(int_field(lac, "num_heads", {}, 0, kMaxHeads, "linear_attn_config."));
  c.kda.head_dim = int(int_field(lac, "head_dim", {}, 0, kMaxHeadDim, "linear_attn_config."));
  c.kda.conv_kernel = int(int_field(lac, "short_conv_kernel_size", 4, 0, kMaxConvKernel, "linear_attn_config."));

  auto kda_layers = layer_list(lac, "kda_layers");
  auto full_layers = layer_list(lac, "full_attn_layers");
  if (c.num_layers <= 0) fail("config.json: num_hidden_layers must be positive, got {}", c.num_layers);
  // The lists are 1-indexed: layer i (0-based) is KDA iff i+1 is in kda_layers.
  std::vector<int> seen(c.num_layers, 0);
  for (int l : kda_layers) {
    if (l < 1 || l > c.num_layers)
      fail("config.json: linear_attn_config.kda_layers entry {} is outside 1..{} (the lists are 1-indexed)",
           l, c.num_layers);
    if (seen[l - 1]) fail("config.json: layer {} is listed twice in linear_attn_config", l);
    seen[l - 1] = 1;
  }
  for (int l : full_layers) {
    if (l < 1 || l > c.num_layers)
      fail("config.json: linear_attn_config.full_attn_layers entry {} is outside 1..{} (the lists are 1-indexed)",
           l, c.num_layers);
    if (seen[l - 1]) fail("config.json: layer {} is listed in both kda_layers and full_attn_layers (or twice)", l);
    seen[l - 1] = 2;
  }
  for (int i = 0; i < c.num_layers; ++i) {
    if (!seen[i])
      fail("config.json: layer {} (1-indexed) is in neither linear_attn_config.kda_layers nor full_attn_layers",
           i + 1);
    c.attn.push_back(seen[i] == 1 ? AttnKind::KDA : AttnKind::MLA);
  }

  // MoE
  c.moe.num_experts = int(int_field(j, "num_experts", 0, 0, kMaxExperts));
  c.moe.top_k = int(int_field(j, "num_experts_per_token", 0, 0, kMaxExperts));
  c.moe.num_shared_experts = int(int_field(j, "num_shared_experts", 0, 0, kMaxExperts));
  c.moe.intermediate_size = int(int_field(j, "moe_intermediate_size", 0, 0, kMaxIntermediate));
  c.moe.num_expert_group = int(int_field(j, "num_expert_group", 1, 0, kMaxExperts));
  c.moe.topk_group = int(int_field(j, "topk_group", 1, 0, kMaxExperts));
  c.moe.renormalize = get_opt<bool>(j, "moe_renormalize", true);
  c.moe.routed_scaling_factor = float_field(j, "routed_scaling_factor", 1.0f, 0.0, 1e6);
  if (!get_opt<bool>(j, "use_grouped_topk", true) && c.moe.num_expert_group != 1)
    fail("config.json: use_grouped_topk = false with num_expert_group = {} is contradictory",
         c.moe.num_expert_group);
  c.first_k_dense_replace = int(int_field(j, "first_k_dense_replace", 0, 0, kMaxLayers));
  c.moe_layer_freq = int(int_field(j, "moe_layer_freq", 1, 0, kMaxLayers));
  if (c.moe_layer_freq <= 0) fail("config.json: moe_layer_freq must be >= 1, got {}", c.moe_layer_freq);
  for (int i = 0; i < c.num_layers; ++i) {
    bool moe = c.moe.num_experts > 0 && i >= c.first_k_dense_replace && i % c.moe_layer_freq == 0;
    c.ffn.push_back(moe ? FfnKind::MoE : FfnKind::Dense);
  }
  if (j.contains("quantization_config") && !j["quantization_config"].is_null())
    c.quant = parse_quant_config(j["quantization_config"]);
  c.validate();
  return c;
}

ModelConfig ModelConfig::from_file(const std::string& path) {
  std::ifstream f(path);
  if (!f) fail("cannot open model config '{}'", path);
  json j;
  try {
    j = json::parse(f);
  } catch (const json::parse_error& e) {
    fail("config '{}' is not valid JSON (near byte {})", path, e.byte);
  }
  try {
    return from_json(j);
  } catch (const Error& e) {
    fail("{} (in {})", e.what(), path);
  }
}

void ModelConfig::validate() const {
  auto pos = [](int v, const char* name) {
    if (v <= 0) fail("config.json: {} must be positive, got {}", name, v);
  };
  pos(vocab_size, "vocab_size");
  pos(hidden_size, "hidden_size");
  if (!(rms_norm_eps > 0)) fail("config.json: rms_norm_eps must be positive");
  if (int(attn.size()) != num_layers || int(ffn.size()) != num_layers)
    fail("config: layer lists do not cover num_hidden_layers = {}", num_layers);
  if (num_kda_layers() > 0) {
    pos(kda.num_heads, "linear_attn_config.num_heads");
    pos(kda.head_dim, "linear_attn_config.head_dim");
    pos(kda.conv_kernel, "linear_attn_config.short_conv_kernel_size");
  }
  if (num_mla_layers() > 0) {
    pos(mla.num_heads, "num_attention_heads");
    pos(mla.kv_lora_rank, "kv_lora_rank");
    pos(mla.qk_nope_head_dim, "qk_nope_head_dim");
    if (mla.qk_rope_head_dim < 0) fail("config.json: qk_rope_head_dim must be >= 0");
    pos(mla.v_head_dim, "v_head_dim");
  }
  bool any_moe = std::find(ffn.begin(), ffn.end(), FfnKind::MoE) != ffn.end();
  bool any_dense = std::find(ffn.begin(), ffn.end(), FfnKind::Dense) != ffn.end();
  if (any_dense) pos(intermediate_size, "intermediate_size");
  if (any_moe) {
    pos(moe.num_experts, "num_experts");
    pos(moe.top_k, "num_experts_per_token");
    pos(moe.intermediate_size, "moe_intermediate_size");
    if (moe.num_shared_experts < 0) fail("config.json: num_shared_experts must be >= 0");
    if (moe.top_k > moe.num_experts)
      fail("config.json: num_experts_per_token ({}) > num_experts ({})", moe.top_k, moe.num_experts);
    pos(moe.num_expert_group, "num_expert_group");
    if (moe.num_experts % moe.num_expert_group != 0)
      fail("config.json: num_experts ({}) is not divisible by num_expert_group ({})", moe.num_experts,
           moe.num_expert_group);
    if (moe.topk_group < 1 || moe.topk_group > moe.num_expert_group)
      fail("config.json: topk_group ({}) must be in 1..num_expert_group ({})", moe.topk_group,
           moe.num_expert_group);
    int per_group = moe.num_experts / moe.num_expert_group;
    if (moe.num_expert_group > 1 && per_group < 2)
      fail("config.json: grouped top-k needs at least 2 experts per group (num_experts {} / num_expert_group {})",
           moe.num_experts, moe.num_expert_group);
    if (moe.top_k > moe.topk_group * per_group)
      fail("config.json: num_experts_per_token ({}) exceeds the experts in topk_group ({}) groups of {}",
           moe.top_k, moe.topk_group, per_group);
  }
  for (int e : eos_token_ids)
    if (e < 0 || e >= vocab_size) fail("config.json: eos_token_id {} is outside the vocabulary", e);
}

std::string ModelConfig::summary() const {
  int moe_layers = int(std::count(ffn.begin(), ffn.end(), FfnKind::MoE));
  return fmt::format(
      "kimi_linear: {} layers ({} KDA, {} MLA; {} MoE), hidden {}, vocab {}, KDA {}x{}, MLA {} heads "
      "latent {}, experts {} top-{} (+{} shared, width {})",
      num_layers, num_kda_layers(), num_mla_layers(), moe_layers, hidden_size, vocab_size, kda.num_heads,
      kda.head_dim, mla.num_heads, mla.latent_dim(), moe.num_experts, moe.top_k, moe.num_shared_experts,
      moe.intermediate_size);
}

}  // namespace ds
