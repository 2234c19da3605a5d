// Test utility: quantized copies of the tiny golden checkpoint (tests/fixtures/tiny/model), written
// the way the real checkpoints are, so the loaders read them through the same code as a download.
//   Fp8Channel: compressed-tensors "float-quantized", weights per channel (weight_scale [N, 1] F32),
//     input activations dynamic per token, ignore ["lm_head", "re:.*gate$"] (the llm-compressor
//     FP8_DYNAMIC recipe: every other Linear is FP8, b_proj, f_b/g_b, kv_a and kv_b included).
//   Fp8Block: quant_method "fp8", weight_block_size [bn, bk], weight_scale_inv F32 [ceil(N/bn),
//     ceil(K/bk)] (the DeepSeek-V3 / Kimi-K2 release format; w = fp8 * weight_scale_inv), every Linear
//     but lm_head, the routers, b_proj and kv_a_proj_with_mqa (the K2 FP8_BLOCK recipe's ignores).
// Quantization: model/quant.h's quantize_fp8_blocks (channel = blocks of 1 x K). `dequantized` holds
// fp8 * scale of every quantized weight, computed here independently of the loaders. `edit` may change
// config.json first (another valid config of the same family); a weight whose shape then differs from the
// source checkpoint's is drawn at random (normal, sigma 0.05, a fixed seed per name), the rest copied.
#pragma once
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "config/model_config.h"
#include "core/dtype.h"
#include "model/quant.h"
#include "model/safetensors.h"
#include "model/weights.h"
#include "fixture_draw.h"

namespace ds::test {

enum class Fp8Fixture { Channel, Block };

struct QuantizedFixture {
  std::filesystem::path dir;
  std::map<std::string, std::vector<float>> dequantized;  // weight name -> fp8 * scale, [N * K]
  int quantized = 0;                                      // weights stored in FP8
  ~QuantizedFixture() {
    if (!dir.empty()) std::filesystem::remove_all(dir);
  }
};

inline bool fixture_quantizes(Fp8Fixture f, const TensorSpec& s) {
  if (!fp8_storable(s) || s.name == "lm_head.weight") return false;
  auto ends = [&](const char* x) {
    const std::string e(x);
    return s.name.size() >= e.size() && s.name.compare(s.name.size() - e.size(), e.size(), e) == 0;
  };
  if (ends("block_sparse_moe.gate.weight")) return false;  // the router ("re:.*gate$")
  if (f == Fp8Fixture::Block && (ends("b_proj.weight") || ends("kv_a_proj_with_mqa.weight"))) return false;
  return true;
}

// Writes the quantized copy of `src_dir` into a fresh temporary directory. `block` is the Fp8Block size.
inline std::unique_ptr<QuantizedFixture> make_fp8_fixture(const std::string& src_dir, Fp8Fixture f, int block = 32,
                                                          const std::function<void(nlohmann::json&)>& edit = {}) {
  namespace fs = std::filesystem;
  static int counter = 0;
  auto fx = std::make_unique<QuantizedFixture>();
  fx->dir = fs::temp_directory_path() /
            ("ds_fp8_fixture_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
  fs::remove_all(fx->dir);
  fs::create_directories(fx->dir);
  nlohmann::json cfg;
  {
    std::ifstream in(src_dir + "/config.json");
    cfg = nlohmann::json::parse(in);
  }
  if (edit) edit(cfg);
  const ModelConfig c = ModelConfig::from_json(cfg);
  if (f == Fp8Fixture::Channel) {
    cfg["quantization_config"] = {
        {"quant_method", "compressed-tensors"},
        {"format", "float-quantized"},
        {"quantization_status", "compressed"},
        {"ignore", {"lm_head", "re:.*gate$"}},
        {"config_groups",
         {{"group_0",
           {{"targets", {"Linear"}},
            {"weights", {{"num_bits", 8}, {"type", "float"}, {"strategy", "channel"}, {"symmetric", true}, {"dynamic", false}}},
            {"input_activations",
             {{"num_bits", 8}, {"type", "float"}, {"strategy", "token"}, {"symmetric", true}, {"dynamic", true}}}}}}}};
  } else {
    cfg["quantization_config"] = {{"quant_method", "fp8"},
                                  {"fmt", "e4m3"},
                                  {"activation_scheme", "dynamic"},
                                  {"weight_block_size", {block, block}}};
  }
  {
    std::ofstream out(fx->dir / "config.json");
    out << cfg.dump(2);
  }
  Checkpoint ck = Checkpoint::open(src_dir);
  std::vector<TensorToWrite> out;
  std::vector<std::vector<uint8_t>> qs;  // storage for the written tensors (kept alive until written)
  std::vector<std::vector<float>> scales;
  qs.reserve(1024);
  scales.reserve(1024);
  std::vector<std::vector<float>> drawn;  // weights of an edited shape, drawn at random
  drawn.reserve(1024);
  for (const auto& s : weight_specs(c)) {
    const TensorInfo* src = ck.find(s.name);
    int64_t numel = 1;
    for (int64_t d : s.shape) numel *= d;
    const bool same = src && src->shape == s.shape;
    if (!same) drawn.push_back(draw_weights(s.name, numel));
    if (!fixture_quantizes(f, s)) {
      if (same) out.push_back({src->name, src->dtype, src->shape, src->data});
      else out.push_back({s.name, DType::F32, s.shape, drawn.back().data()});
      continue;
    }
    const int64_t N = s.shape[0], K = s.shape[1];
    std::vector<float> w(size_t(N * K));
    if (same) convert_to_f32(src->dtype, src->data, w.data(), w.size());
    else w = drawn.back();
    const int bn = f == Fp8Fixture::Channel ? 1 : block, bk = f == Fp8Fixture::Channel ? int(K) : block;
    const int64_t ld = (K + bk - 1) / bk;
    qs.emplace_back(size_t(N * K));
    scales.emplace_back(size_t((N + bn - 1) / bn * ld));
    quantize_fp8_blocks(w.data(), N, K, bn, bk, qs.back().data(), scales.back().data());
    std::vector<float> dq(size_t(N * K));
    for (int64_t r = 0; r < N; ++r)
      for (int64_t k = 0; k < K; ++k)
        dq[size_t(r * K + k)] = fp8_e4m3_to_f32(qs.back()[size_t(r * K + k)]) * scales.back()[size_t((r / bn) * ld + k / bk)];
    fx->dequantized[s.name] = std::move(dq);
    ++fx->quantized;
    out.push_back({s.name, DType::F8_E4M3, s.shape, qs.back().data()});
    if (f == Fp8Fixture::Channel)
      out.push_back({s.name + "_scale", DType::F32, {N, 1}, scales.back().data()});
    else
      out.push_back({s.name + "_scale_inv", DType::F32, {(N + bn - 1) / bn, ld}, scales.back().data()});
  }
  write_safetensors((fx->dir / "model.safetensors").string(), out);
  return fx;
}

}  // namespace ds::test
