// The `quantization_config` of a checkpoint's config.json (typed and validated), and the
// `--quantization` a bf16 checkpoint may be quantized with at load time. Format facts relied on
// (docs/QUANTIZATION.md has the full list):
//   compressed-tensors: quant_method "compressed-tensors", format "float-quantized" (or "naive-quantized"),
//     config_groups.*.weights {num_bits 8, type "float", strategy "channel" | "tensor" | "block",
//     block_structure [bn, bk] for "block"}, input_activations null or {num_bits 8, type "float",
//     dynamic true} (per token), `ignore` module names or "re:" regular expressions. Tensors: X.weight
//     F8_E4M3 [N, K] and X.weight_scale (F32/BF16) [N, 1] (channel), [1] (tensor) or [ceil(N/bn), ceil(K/bk)]
//     (block); w = fp8 * weight_scale.
//   block FP8 (DeepSeek-V3 / Kimi-K2 release format): quant_method "fp8", weight_block_size [bn, bk],
//     activation_scheme "dynamic"; X.weight F8_E4M3 and X.weight_scale_inv F32 [ceil(N/bn), ceil(K/bk)];
//     despite its name w = fp8 * weight_scale_inv.
//   compressed-tensors INT4 (AWQ / GPTQ W4A16): format "pack-quantized", config_groups.*.weights {num_bits 4,
//     type "int", strategy "group", group_size 32 | 128, symmetric true | false, actorder null | "static"},
//     no input activations. Tensors (model/quant_int4.h): X.weight_packed I32 [N, ceil(K/8)], X.weight_scale
//     [N, ceil(K/g)], X.weight_shape [2], X.weight_zero_point I32 [ceil(N/8), ceil(K/g)] when asymmetric.
#pragma once
#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace ds {

enum class QuantMethod : uint8_t { None, Fp8, Int4 };
enum class Fp8Scales : uint8_t { Channel, Tensor, Block };

struct QuantConfig {
  QuantMethod method = QuantMethod::None;
  std::string source;            // "compressed-tensors", "fp8" (block release format), "online" (--quantization)
  Fp8Scales scales = Fp8Scales::Channel;
  int block_n = 0, block_k = 0;  // Block: rows x columns of a scale block (powers of two)
  bool dynamic_activations = false;  // the checkpoint's scheme quantizes activations per token at run time;
                                     // deltaserve keeps them in the activation dtype (more precise)
  std::vector<std::string> ignore;   // compressed-tensors: modules left in high precision
  int group_size = 0;                // Int4: weights per scale along K (32 or 128)
  bool symmetric = true;             // Int4: false when the checkpoint stores zero points

  bool quantized() const { return method != QuantMethod::None; }
  bool int4() const { return method == QuantMethod::Int4; }
  bool fp8() const { return method == QuantMethod::Fp8; }
  bool scale_is_inverse() const { return source == "fp8"; }  // the tensor is named weight_scale_inv
  // Whether `module` (a weight name without ".weight") is in the ignore list (exact names, or "re:"
  // patterns matched against the whole name).
  bool ignored(const std::string& module) const;
  std::string describe() const;  // e.g. "fp8 e4m3, 128x128 block scales (fp8)"
};

// Parses config.json's `quantization_config` (throws a ds::Error naming the field for anything not
// supported: other quant methods, int8, static activation scales, non-power-of-two blocks, INT4 group
// sizes other than 32 and 128, INT4 activation quantization or act-order group indices).
QuantConfig parse_quant_config(const nlohmann::json& qc);

// The --quantization option: "" / "none" (as the checkpoint is) or "fp8" (a bf16 checkpoint quantized
// at load time to e4m3 per 128x128 block; a checkpoint already in FP8 is used as it is), or "int4"
// (an INT4 pack-quantized checkpoint as it is; with `dummy` weights, INT4 W4A16 symmetric group 128
// with source "dummy"). Throws for anything else, for fp8 on a checkpoint quantized some other way, and
// for int4 on a checkpoint that is not INT4 (quantizing to INT4 at load is not built).
// "compressed-tensors" (vLLM's name) takes a compressed-tensors checkpoint as it is.
QuantConfig resolve_quantization(const QuantConfig& checkpoint, const std::string& option, bool dummy = false);

// The INT4 group of dummy weights (--load-format dummy --quantization int4).
constexpr int kDummyInt4Group = 128;

// Online quantization's block (rows and columns of one scale).
constexpr int kOnlineFp8Block = 128;

}  // namespace ds
