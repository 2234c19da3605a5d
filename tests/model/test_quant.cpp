// FP8 weights on the CPU: the e4m3 codec, quantization_config parsing, the loaders on quantized copies
// of the tiny checkpoint (tests/common/quant_fixture.h: compressed-tensors per-channel, block-scaled
// fp8 with weight_scale_inv, and --quantization fp8 at load), named errors for malformed quantized
// checkpoints, and the accuracy of each format against the float64 reference of the bf16 model with
// the MoE routing pinned to the bf16 model's choices.
//
// Accuracy bound. e4m3 keeps 3 mantissa bits: a weight moves by at most half a step, 2^-4 of its
// magnitude at the bottom of a binade and 2^-5 at the top; averaged over a binade the rms relative error
// is ~0.75 x 2^-3 / sqrt(12) = 0.027 (a block or channel scale puts each block's amax at the top of the
// range, so almost nothing is subnormal). One projection's outputs then carry ~2.7% rms relative error,
// independent between projections; the tiny model chains 16 quantized sublayers (8 layers x attention
// and FFN), so the logits' relative L2 is about sqrt(16) x 0.027 = 0.11 at most: the bound is one
// whole e4m3 step, 2^-3 = 0.125. Measured (printed): 0.03-0.07. An error in the format handling (a
// scale on the wrong row, a block shape transposed, a dropped scale) gives errors of order 1.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <fstream>
#include <nlohmann/json.hpp>

#include "../common/quant_fixture.h"
#include "config/quant_config.h"
#include "core/error.h"
#include "model/host_weights.h"
#include "model/quant.h"
#include "model_test_util.h"
#include "quant_test_util.h"

namespace ds::test {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr double kFp8LogitBound = 0.125;  // 2^-3: see the file comment

TEST(Fp8Codec, EveryCodeRoundTripsAndRoundingIsNearestEven) {
  for (int b = 0; b < 256; ++b) {
    const float v = fp8_e4m3_to_f32(uint8_t(b));
    if ((b & 0x7f) == 0x7f) {
      EXPECT_TRUE(std::isnan(v)) << b;
      continue;
    }
    if (b == 0x80) continue;  // -0 encodes as -0
    EXPECT_EQ(f32_to_fp8_e4m3(v), uint8_t(b)) << b << " -> " << v;
  }
  EXPECT_EQ(fp8_e4m3_to_f32(0x7e), 448.f);
  EXPECT_EQ(fp8_e4m3_to_f32(0x38), 1.f);
  EXPECT_EQ(fp8_e4m3_to_f32(0x01), std::ldexp(1.f, -9));
  EXPECT_EQ(f32_to_fp8_e4m3(1.0625f), 0x38);   // tie between 1 and 1.125: to even (1)
  EXPECT_EQ(f32_to_fp8_e4m3(1.1875f), 0x3a);   // tie between 1.125 and 1.25: to even (1.25)
  EXPECT_EQ(f32_to_fp8_e4m3(1.07f), 0x39);
  EXPECT_EQ(f32_to_fp8_e4m3(1000.f), 0x7e);    // saturates
  EXPECT_EQ(f32_to_fp8_e4m3(-1000.f), 0xfe);
  EXPECT_EQ(f32_to_fp8_e4m3(std::ldexp(1.f, -11)), 0x00);  // a quarter of the smallest subnormal
  EXPECT_EQ(f32_to_fp8_e4m3(std::ldexp(3.f, -10)), 0x02);  // 1.5 x 2^-9: tie to even (2 x 2^-9)
}

TEST(Fp8Codec, BlockQuantizerScalesEachBlockToItsAmax) {
  // 3 x 5 matrix, blocks of 2 x 4: four blocks, the last ones partial
  const std::vector<float> w = {1, -2, 3, 4, 100, 0.5f, 0.25f, -8, 2, 1, 0, 0, 0, 0, 0};
  std::vector<uint8_t> q(15);
  std::vector<float> s(4);
  quantize_fp8_blocks(w.data(), 3, 5, 2, 4, q.data(), s.data());
  EXPECT_EQ(s[0], 8.f / 448.f);
  EXPECT_EQ(s[1], 100.f / 448.f);
  EXPECT_EQ(s[2], 1.f);  // an all-zero block
  EXPECT_EQ(s[3], 1.f);
  EXPECT_EQ(q[7], 0xfe);  // -8 is the block's amax: -448
  EXPECT_EQ(q[4], 0x7e);
  std::vector<float> f = w;
  fake_quantize_fp8_blocks(f.data(), 3, 5, 2, 4);
  for (size_t i = 0; i < w.size(); ++i) EXPECT_NEAR(f[i], w[i], std::fabs(w[i]) * 0.0625 + 1e-6) << i;
}

// Block scales laid out in rows of a padded length (the GPU's cuBLASLt layout): each row's values first, then zeros;
// an unpadded length returns the values as they are; rows that do not divide, or a shorter length, are errors.
TEST(Fp8Codec, ScaleRowsArePaddedInPlaceOfEachRow) {
  const std::vector<float> s = {1, 2, 3, 4, 5, 6};  // 2 rows of 3 (K = 384: 3 blocks of 128)
  EXPECT_EQ(pad_scale_rows(s, 3, 4), (std::vector<float>{1, 2, 3, 0, 4, 5, 6, 0}));
  EXPECT_EQ(pad_scale_rows(s, 3, 3), s);
  EXPECT_EQ(pad_scale_rows(s, 2, 4), (std::vector<float>{1, 2, 0, 0, 3, 4, 0, 0, 5, 6, 0, 0}));
  EXPECT_THROW(pad_scale_rows(s, 4, 8), Error);  // 6 values are not rows of 4
  EXPECT_THROW(pad_scale_rows(s, 3, 2), Error);  // rows cannot shrink
}

TEST(QuantConfig, ParsesTheCheckpointFormats) {
  const QuantConfig ch = parse_quant_config(json::parse(R"({"quant_method": "compressed-tensors",
      "format": "float-quantized", "ignore": ["lm_head", "re:.*gate$"], "config_groups": {"group_0": {
      "targets": ["Linear"], "weights": {"num_bits": 8, "type": "float", "strategy": "channel"},
      "input_activations": {"num_bits": 8, "type": "float", "strategy": "token", "dynamic": true}}}})"));
  EXPECT_EQ(ch.scales, Fp8Scales::Channel);
  EXPECT_TRUE(ch.dynamic_activations);
  EXPECT_FALSE(ch.scale_is_inverse());
  EXPECT_TRUE(ch.ignored("lm_head"));
  EXPECT_TRUE(ch.ignored("model.layers.3.block_sparse_moe.gate"));
  EXPECT_FALSE(ch.ignored("model.layers.3.block_sparse_moe.experts.0.w1"));
  const QuantConfig bl = parse_quant_config(
      json::parse(R"({"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [128, 128]})"));
  EXPECT_EQ(bl.scales, Fp8Scales::Block);
  EXPECT_EQ(bl.block_n, 128);
  EXPECT_EQ(bl.block_k, 128);
  EXPECT_TRUE(bl.scale_is_inverse());
  auto err = [](const char* text) {
    try {
      parse_quant_config(json::parse(text));
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(err(R"({"quant_method": "awq"})").find("awq"), std::string::npos);
  EXPECT_NE(err(R"({"quant_method": "fp8", "weight_block_size": [128, 96]})").find("weight_block_size"), std::string::npos);
  EXPECT_NE(err(R"({"quant_method": "fp8", "activation_scheme": "static", "weight_block_size": [128, 128]})").find("static"),
            std::string::npos);
  EXPECT_NE(err(R"({"quant_method": "compressed-tensors", "format": "float-quantized", "config_groups": {"g": {
      "weights": {"num_bits": 8, "type": "float", "strategy": "channel"},
      "input_activations": {"num_bits": 8, "type": "float", "dynamic": false}}}})").find("static input activation"),
            std::string::npos);
  EXPECT_EQ(resolve_quantization(QuantConfig{}, "fp8").source, "online");
  EXPECT_EQ(resolve_quantization(ch, "fp8").source, "compressed-tensors");  // an FP8 checkpoint as it is
  EXPECT_THROW(resolve_quantization(QuantConfig{}, "int8"), Error);
}

// Every weight the fixture quantized loads as exactly fp8 * scale; the others as in the bf16 checkpoint.
void expect_exact_weights(Fp8Fixture f) {
  auto fx = make_fp8_fixture(tiny_model_dir(), f);
  const ModelConfig c = ModelConfig::from_file((fx->dir / "config.json").string());
  ASSERT_TRUE(c.quant.quantized());
  const HostWeights w = load_host_weights(c, Checkpoint::open(fx->dir.string()));
  const HostWeights ref = load_host_weights(ModelConfig::from_file(tiny_model_dir() + "/config.json"),
                                            Checkpoint::open(tiny_model_dir()));
  std::map<std::string, const HostTensor*> ref_of;
  HostWeights& ref_mut = const_cast<HostWeights&>(ref);
  for_each_weight(c, ref_mut, [&](const TensorSpec& s, HostTensor& t) { ref_of[s.name] = &t; });
  int checked = 0;
  HostWeights& w_mut = const_cast<HostWeights&>(w);
  for_each_weight(c, w_mut, [&](const TensorSpec& s, HostTensor& t) {
    auto it = fx->dequantized.find(s.name);
    const std::vector<float>& want = it != fx->dequantized.end() ? it->second : ref_of.at(s.name)->data;
    ASSERT_EQ(t.data.size(), want.size()) << s.name;
    for (size_t i = 0; i < want.size(); ++i)
      if (t.data[i] != want[i]) {
        ADD_FAILURE() << s.name << "[" << i << "] = " << t.data[i] << ", expected " << want[i];
        return;
      }
    if (it != fx->dequantized.end()) ++checked;
  });
  EXPECT_EQ(checked, fx->quantized);
  EXPECT_GT(fx->quantized, 100);
}

TEST(Fp8Loading, CompressedTensorsChannelWeightsLoadExactly) { expect_exact_weights(Fp8Fixture::Channel); }
TEST(Fp8Loading, BlockScaledWeightsLoadExactly) { expect_exact_weights(Fp8Fixture::Block); }

// A fixture of another config of the family (experts 128 wide: the GPU test of the FP8 wgmma kernel uses it):
// the edited weights have the new shapes, load exactly as fp8 * scale, and the others are the tiny model's.
TEST(Fp8Loading, EditedConfigFixtureLoads) {
  auto fx = make_fp8_fixture(tiny_model_dir(), Fp8Fixture::Channel, 32,
                             [](json& c) { c["moe_intermediate_size"] = 128; });
  const ModelConfig c = ModelConfig::from_file((fx->dir / "config.json").string());
  ASSERT_EQ(c.moe.intermediate_size, 128);
  HostWeights w = load_host_weights(c, Checkpoint::open(fx->dir.string()));
  int experts = 0;
  for_each_weight(c, w, [&](const TensorSpec& s, HostTensor& t) {
    auto it = fx->dequantized.find(s.name);
    if (it == fx->dequantized.end()) return;
    ASSERT_EQ(t.data, it->second) << s.name;
    if (s.name.find(".experts.") != std::string::npos && s.name.find(".w2.") != std::string::npos) {
      EXPECT_EQ(s.shape[1], 128) << s.name;
      ++experts;
    }
  });
  EXPECT_GT(experts, 0);
}

// A checkpoint directory edited from a fixture: `edit` changes its tensors and/or config.
std::string load_error(Fp8Fixture f, const std::function<void(std::vector<TensorToWrite>&, json&)>& edit) {
  auto fx = make_fp8_fixture(tiny_model_dir(), f);
  return edited_load_error(fx->dir, edit);
}

TEST(Fp8Loading, MalformedCheckpointsAreNamedErrors) {
  const std::string q = "model.layers.1.self_attn.q_proj.weight";
  auto drop = [&](const std::string& name) {
    return [name](std::vector<TensorToWrite>& ts, json&) {
      std::erase_if(ts, [&](const TensorToWrite& t) { return t.name == name; });
    };
  };
  std::string e = load_error(Fp8Fixture::Channel, drop(q + "_scale"));
  EXPECT_NE(e.find("missing scale tensor weight_scale"), std::string::npos) << e;
  EXPECT_NE(e.find(q), std::string::npos) << e;
  e = load_error(Fp8Fixture::Block, drop(q + "_scale_inv"));
  EXPECT_NE(e.find("missing scale tensor weight_scale_inv"), std::string::npos) << e;
  // a scale of the wrong shape
  std::vector<float> bad(3, 1.f);
  e = load_error(Fp8Fixture::Block, [&](std::vector<TensorToWrite>& ts, json&) {
    for (auto& t : ts)
      if (t.name == q + "_scale_inv") t = {t.name, DType::F32, {3}, bad.data()};
  });
  EXPECT_NE(e.find(q + "_scale_inv is [3], expected [8, 8]"), std::string::npos) << e;
  // FP8 tensors without a quantization_config
  e = load_error(Fp8Fixture::Channel, [](std::vector<TensorToWrite>&, json& cfg) { cfg.erase("quantization_config"); });
  EXPECT_NE(e.find("no quantization_config"), std::string::npos) << e;
  // the scheme names weight_scale but the checkpoint has weight_scale_inv
  e = load_error(Fp8Fixture::Block, [](std::vector<TensorToWrite>&, json& cfg) {
    cfg["quantization_config"] = json::parse(R"({"quant_method": "compressed-tensors", "format": "float-quantized",
        "config_groups": {"g": {"weights": {"num_bits": 8, "type": "float", "strategy": "block", "block_structure": [32, 32]}}}})");
  });
  EXPECT_NE(e.find("weight_scale expected, found"), std::string::npos) << e;
  // an FP8 module the ignore list keeps in high precision
  e = load_error(Fp8Fixture::Channel, [&](std::vector<TensorToWrite>&, json& cfg) {
    cfg["quantization_config"]["ignore"].push_back("model.layers.1.self_attn.q_proj");
  });
  EXPECT_NE(e.find("quantization_config.ignore lists it"), std::string::npos) << e;
  // a scale beside a bf16 weight
  std::vector<float> one(1, 1.f);
  e = load_error(Fp8Fixture::Channel, [&](std::vector<TensorToWrite>& ts, json&) {
    ts.push_back({"lm_head.weight_scale", DType::F32, {2048, 1}, nullptr});
    static std::vector<float> s(2048, 1.f);
    ts.back().data = s.data();
  });
  EXPECT_NE(e.find("lm_head.weight has a scale tensor but is not FP8"), std::string::npos) << e;
}

void expect_fixture_accuracy(Fp8Fixture f, const std::string& name) {
  auto fx = make_fp8_fixture(tiny_model_dir(), f);
  BackendOptions o = tiny_options();
  o.model_dir = fx->dir.string();
  CpuBackend b(o);
  expect_accuracy(name, b, kFp8LogitBound);
}

TEST(Fp8Accuracy, CompressedTensorsChannelAgainstReference) { expect_fixture_accuracy(Fp8Fixture::Channel, "fp8-channel"); }
TEST(Fp8Accuracy, BlockScaledAgainstReference) { expect_fixture_accuracy(Fp8Fixture::Block, "fp8-block32"); }

TEST(Fp8Accuracy, OnlineQuantizationAgainstReference) {
  BackendOptions o = tiny_options();
  o.quantization = "fp8";
  CpuBackend b(o);
  EXPECT_EQ(b.config().quant.source, "online");
  expect_accuracy("fp8-online128", b, kFp8LogitBound);
}

}  // namespace
}  // namespace ds::test
