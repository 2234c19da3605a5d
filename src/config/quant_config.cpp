#include "config/quant_config.h"

#include <nlohmann/json.hpp>
#include <regex>

#include "core/error.h"

namespace ds {
namespace {

using json = nlohmann::json;

bool pow2(int64_t v) { return v > 0 && (v & (v - 1)) == 0; }

void parse_block(const json& b, const char* field, QuantConfig& q) {
  if (!b.is_array() || b.size() != 2 || !b[0].is_number_integer() || !b[1].is_number_integer())
    fail("quantization_config: {} must be [rows, columns], got {}", field, b.dump());
  const int64_t bn = b[0].get<int64_t>(), bk = b[1].get<int64_t>();
  if (!pow2(bn) || !pow2(bk) || bn > 4096 || bk > 4096 || bk < 16)
    fail("quantization_config: {} {} is not supported (powers of two, columns 16..4096)", field, b.dump());
  q.scales = Fp8Scales::Block;
  q.block_n = int(bn);
  q.block_k = int(bk);
}

void parse_ignore(const json& qc, QuantConfig& q) {
  if (qc.contains("ignore") && !qc["ignore"].is_null()) {
    if (!qc["ignore"].is_array()) fail("quantization_config.ignore must be a list of names");
    for (const auto& e : qc["ignore"]) {
      if (!e.is_string()) fail("quantization_config.ignore must be a list of names, got {}", e.dump());
      q.ignore.push_back(e.get<std::string>());
    }
  }
}

// One config group's weights scheme (checked to exist).
const json& group_weights(const std::string& name, const json& g) {
  if (!g.is_object() || !g.contains("weights") || !g["weights"].is_object())
    fail("quantization_config.config_groups.{}: no weights scheme", name);
  return g["weights"];
}

// pack-quantized INT4 W4A16: every group 4-bit int weights per group of 32 or 128 along K.
void parse_pack_quantized(const json& qc, QuantConfig& q) {
  q.method = QuantMethod::Int4;
  bool first = true;
  for (const auto& [name, g] : qc["config_groups"].items()) {
    const json& w = group_weights(name, g);
    const std::string where = "quantization_config.config_groups." + name + ".weights";
    if (w.value("num_bits", 0) != 4 || w.value("type", "int") != "int")
      fail("{}: num_bits {} type '{}' is not supported by pack-quantized (4-bit int)", where, w.value("num_bits", 0),
           w.value("type", ""));
    const std::string strategy = w.value("strategy", "");
    if (strategy != "group") fail("{}: strategy '{}' is not supported for INT4 (group)", where, strategy);
    const json gs = w.contains("group_size") ? w["group_size"] : json();
    if (!gs.is_number_integer() || (gs.get<int64_t>() != 32 && gs.get<int64_t>() != 128))
      fail("{}: group_size {} is not supported (32 or 128)", where, gs.dump());
    if (w.contains("dynamic") && w["dynamic"].is_boolean() && w["dynamic"].get<bool>())
      fail("{}: dynamic weight quantization is not supported", where);
    if (w.contains("actorder") && !w["actorder"].is_null() && w["actorder"] != "static")
      fail("{}: actorder {} (weight_g_idx) is not supported (null or \"static\")", where, w["actorder"].dump());
    const bool sym = !w.contains("symmetric") || !w["symmetric"].is_boolean() || w["symmetric"].get<bool>();
    if (g.contains("input_activations") && !g["input_activations"].is_null())
      fail("quantization_config.config_groups.{}: INT4 with activation quantization is not supported (W4A16)", name);
    const int group = int(gs.get<int64_t>());
    if (first) {
      q.group_size = group;
      q.symmetric = sym;
      first = false;
    } else if (group != q.group_size || sym != q.symmetric) {
      fail("quantization_config: INT4 config groups with different group sizes or symmetry are not supported");
    }
  }
}

void parse_compressed_tensors(const json& qc, QuantConfig& q) {
  const std::string format = qc.value("format", "");
  if (format != "float-quantized" && format != "naive-quantized" && format != "pack-quantized")
    fail("quantization_config: compressed-tensors format '{}' is not supported (float-quantized FP8, pack-quantized "
         "INT4)", format);
  if (!qc.contains("config_groups") || !qc["config_groups"].is_object() || qc["config_groups"].empty())
    fail("quantization_config: compressed-tensors needs config_groups");
  parse_ignore(qc, q);
  if (format == "pack-quantized") return parse_pack_quantized(qc, q);
  bool first = true;
  for (const auto& [name, g] : qc["config_groups"].items()) {
    const json& w = group_weights(name, g);
    if (w.value("num_bits", 0) != 8 || w.value("type", "") != "float")
      fail("quantization_config.config_groups.{}.weights: num_bits {} type '{}' is not supported (8-bit float)",
           name, w.value("num_bits", 0), w.value("type", ""));
    if (w.contains("symmetric") && w["symmetric"].is_boolean() && !w["symmetric"].get<bool>())
      fail("quantization_config.config_groups.{}.weights: asymmetric FP8 is not supported", name);
    if (w.contains("dynamic") && w["dynamic"].is_boolean() && w["dynamic"].get<bool>())
      fail("quantization_config.config_groups.{}.weights: dynamic weight quantization is not supported", name);
    QuantConfig g_q;
    const std::string strategy = w.value("strategy", "");
    if (strategy == "channel") g_q.scales = Fp8Scales::Channel;
    else if (strategy == "tensor") g_q.scales = Fp8Scales::Tensor;
    else if (strategy == "block")
      parse_block(w.contains("block_structure") ? w["block_structure"] : json(), "weights.block_structure", g_q);
    else
      fail("quantization_config.config_groups.{}.weights: strategy '{}' is not supported (channel, tensor, block)",
           name, strategy);
    if (g.contains("input_activations") && !g["input_activations"].is_null()) {
      const json& a = g["input_activations"];
      if (!a.is_object() || !a.value("dynamic", false))
        fail("quantization_config.config_groups.{}: static input activation scales are not supported", name);
      g_q.dynamic_activations = true;
    }
    if (first) {
      q.scales = g_q.scales;
      q.block_n = g_q.block_n;
      q.block_k = g_q.block_k;
      q.dynamic_activations = g_q.dynamic_activations;
      first = false;
    } else if (g_q.scales != q.scales || g_q.block_n != q.block_n || g_q.block_k != q.block_k) {
      fail("quantization_config: config groups with different weight scale layouts are not supported");
    }
  }
}

}  // namespace

QuantConfig parse_quant_config(const json& qc) {
  if (!qc.is_object()) fail("config.json: quantization_config must be an object");
  QuantConfig q;
  const std::string method = qc.value("quant_method", "");
  q.method = QuantMethod::Fp8;
  q.source = method;
  if (method == "compressed-tensors") {
    parse_compressed_tensors(qc, q);
  } else if (method == "fp8") {
    const std::string fmt = qc.value("fmt", "e4m3");
    if (fmt != "e4m3") fail("quantization_config: fp8 fmt '{}' is not supported (e4m3)", fmt);
    const std::string act = qc.value("activation_scheme", "dynamic");
    if (act != "dynamic") fail("quantization_config: activation_scheme '{}' is not supported (dynamic)", act);
    q.dynamic_activations = true;
    if (!qc.contains("weight_block_size") || qc["weight_block_size"].is_null())
      fail("quantization_config: quant_method fp8 without weight_block_size (per-tensor FP8) is not supported");
    parse_block(qc["weight_block_size"], "weight_block_size", q);
    for (const char* key : {"ignored_layers", "modules_to_not_convert"})
      if (qc.contains(key) && qc[key].is_array())
        for (const auto& e : qc[key])
          if (e.is_string()) q.ignore.push_back(e.get<std::string>());
  } else {
    fail("config.json: quantization_config.quant_method '{}' is not supported (compressed-tensors, fp8)", method);
  }
  return q;
}

bool QuantConfig::ignored(const std::string& module) const {
  for (const auto& pat : ignore) {
    if (pat.rfind("re:", 0) == 0) {
      try {
        if (std::regex_match(module, std::regex(pat.substr(3)))) return true;
      } catch (const std::regex_error&) {
        fail("quantization_config.ignore: bad regular expression '{}'", pat);
      }
    } else if (pat == module) {
      return true;
    }
  }
  return false;
}

std::string QuantConfig::describe() const {
  if (!quantized()) return "none";
  if (int4())
    return fmt::format("int4 w4a16, group {}, {} ({})", group_size, symmetric ? "symmetric" : "zero points", source);
  std::string s = "fp8 e4m3, ";
  if (scales == Fp8Scales::Block) s += fmt::format("{}x{} block scales", block_n, block_k);
  else s += scales == Fp8Scales::Channel ? "per-channel scales" : "per-tensor scales";
  return s + " (" + source + ")";
}

QuantConfig resolve_quantization(const QuantConfig& ck, const std::string& option, bool dummy) {
  if (option.empty() || option == "none" || option == "auto") return ck;
  if (option == "compressed-tensors") {
    if (ck.source != "compressed-tensors")
      fail("--quantization compressed-tensors: the checkpoint's quantization_config is not compressed-tensors ({})",
           ck.describe());
    return ck;
  }
  if (option == "int4") {
    if (ck.int4()) return ck;
    if (ck.quantized()) fail("--quantization int4: the checkpoint is already quantized ({})", ck.describe());
    if (!dummy)
      fail("--quantization int4 needs an INT4 (compressed-tensors pack-quantized) checkpoint or --load-format dummy "
           "(quantizing to INT4 at load is not built)");
    QuantConfig q;
    q.method = QuantMethod::Int4;
    q.source = "dummy";
    q.group_size = kDummyInt4Group;
    return q;
  }
  if (option != "fp8") fail("--quantization '{}' is not supported (none, fp8, int4)", option);
  if (ck.int4()) fail("--quantization fp8: the checkpoint is INT4 ({})", ck.describe());
  if (ck.quantized()) return ck;  // already FP8: its own scales
  QuantConfig q;
  q.method = QuantMethod::Fp8;
  q.source = "online";
  q.scales = Fp8Scales::Block;
  q.block_n = q.block_k = kOnlineFp8Block;
  return q;
}

}  // namespace ds
