// Test utility: INT4 copies of the tiny golden checkpoint (tests/fixtures/tiny/model) in the
// compressed-tensors "pack-quantized" format the AWQ / GPTQ W4A16 checkpoints use (docs/QUANTIZATION.md):
// quantization_config {quant_method "compressed-tensors", format "pack-quantized", config_groups.group_0
// {targets ["Linear"], weights {num_bits 4, type "int", strategy "group", group_size g, symmetric}},
// ignore ["lm_head", "re:.*block_sparse_moe[.]gate$"]}; every other Linear weight X.weight is replaced by
// X.weight_packed (I32), X.weight_scale (BF16), X.weight_shape (I64 [2]) and, with zero points,
// X.weight_zero_point (I32). Quantization: model/quant_int4.h's quantize_int4; `dequantized` holds
// (q - z) * scale of every quantized weight as the quantizer computed it (independently of the loader's
// unpacking).
#pragma once
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "config/model_config.h"
#include "core/dtype.h"
#include "model/quant.h"
#include "model/quant_int4.h"
#include "model/safetensors.h"
#include "model/weights.h"
#include "fixture_draw.h"

namespace ds::test {

struct Int4Fixture {
  std::filesystem::path dir;
  std::map<std::string, std::vector<float>> dequantized;  // weight name -> (q - z) * scale, [N * K]
  int quantized = 0;
  ~Int4Fixture() {
    if (!dir.empty()) std::filesystem::remove_all(dir);
  }
};

inline bool int4_fixture_quantizes(const TensorSpec& s) {
  if (!fp8_storable(s) || s.name == "lm_head.weight") return false;
  const std::string router = "block_sparse_moe.gate.weight";
  return !(s.name.size() >= router.size() && s.name.compare(s.name.size() - router.size(), router.size(), router) == 0);
}

inline nlohmann::json int4_quant_config(int group, bool symmetric) {
  return {{"quant_method", "compressed-tensors"},
          {"format", "pack-quantized"},
          {"quantization_status", "compressed"},
          {"ignore", {"lm_head", "re:.*block_sparse_moe[.]gate$"}},
          {"config_groups",
           {{"group_0",
             {{"targets", {"Linear"}},
              {"input_activations", nullptr},
              {"weights",
               {{"num_bits", 4}, {"type", "int"}, {"strategy", "group"}, {"group_size", group},
                {"symmetric", symmetric}, {"dynamic", false}, {"actorder", nullptr}}}}}}}};
}

// Writes the INT4 copy of `src_dir` into a fresh temporary directory.
// `edit` may change config.json first; weights whose shape then differs are drawn (fixture_draw.h).
inline std::unique_ptr<Int4Fixture> make_int4_fixture(const std::string& src_dir, int group, bool symmetric,
                                                      const std::function<void(nlohmann::json&)>& edit = {}) {
  namespace fs = std::filesystem;
  static int counter = 0;
  auto fx = std::make_unique<Int4Fixture>();
  fx->dir = fs::temp_directory_path() /
            ("ds_int4_fixture_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
  fs::remove_all(fx->dir);
  fs::create_directories(fx->dir);
  nlohmann::json cfg;
  {
    std::ifstream in(src_dir + "/config.json");
    cfg = nlohmann::json::parse(in);
  }
  if (edit) edit(cfg);
  const ModelConfig c = ModelConfig::from_json(cfg);
  cfg["quantization_config"] = int4_quant_config(group, symmetric);
  std::ofstream(fx->dir / "config.json") << cfg.dump(2);
  Checkpoint ck = Checkpoint::open(src_dir);
  std::vector<TensorToWrite> out;
  std::vector<Int4Quantized> qs;
  std::vector<std::vector<int64_t>> shapes;
  qs.reserve(1024);
  shapes.reserve(1024);
  std::vector<std::vector<float>> drawn;
  drawn.reserve(1024);
  for (const auto& s : weight_specs(c)) {
    const TensorInfo* src = ck.find(s.name);
    int64_t numel = 1;
    for (int64_t d : s.shape) numel *= d;
    const bool same = src && src->shape == s.shape;
    if (!same) drawn.push_back(draw_weights(s.name, numel));
    if (!int4_fixture_quantizes(s)) {
      if (same) out.push_back({src->name, src->dtype, src->shape, src->data});
      else out.push_back({s.name, DType::F32, s.shape, drawn.back().data()});
      continue;
    }
    const int64_t N = s.shape[0], K = s.shape[1];
    std::vector<float> w(size_t(N * K));
    if (same) convert_to_f32(src->dtype, src->data, w.data(), w.size());
    else w = drawn.back();
    qs.push_back(quantize_int4(w.data(), N, K, group, symmetric, DType::BF16));
    Int4Quantized& q = qs.back();
    fx->dequantized[s.name] = q.dequantized;
    ++fx->quantized;
    const int64_t G = (K + group - 1) / group;
    shapes.push_back({N, K});
    out.push_back({s.name + "_packed", DType::I32, {N, (K + 7) / 8}, q.packed.data()});
    out.push_back({s.name + "_scale", DType::BF16, {N, G}, q.scale16.data()});
    out.push_back({s.name + "_shape", DType::I64, {2}, shapes.back().data()});
    if (!symmetric) out.push_back({s.name + "_zero_point", DType::I32, {(N + 7) / 8, G}, q.zero.data()});
  }
  write_safetensors((fx->dir / "model.safetensors").string(), out);
  return fx;
}

}  // namespace ds::test
