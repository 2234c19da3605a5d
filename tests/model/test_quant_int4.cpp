// INT4 W4A16 weights on the CPU (compressed-tensors "pack-quantized", the AWQ / GPTQ format): the
// nibble and zero-point packing, quantization_config parsing, the loader on INT4 copies of the tiny
// checkpoint (tests/common/quant_int4_fixture.h: symmetric and with zero points, groups of 32 and 128),
// named errors for malformed INT4 checkpoints, the logits against the same model with the dequantized
// weights stored in fp32, and the accuracy against the float64 reference of the bf16 model with the
// MoE routing pinned to the bf16 model's choices.
//
// Accuracy bound. A group's step is amax / 7.5 (symmetric; (max - min) / 15 with zero points, the same
// for a range around 0), and rounding moves a weight by up to half a step: rms error step / sqrt(12) =
// 0.0385 amax. For the tiny model's Gaussian-like weights amax over a group of 32 is ~2.3 sigma, over
// 128 ~2.8 sigma, so one projection's output carries ~9% (group 32) to ~11% (group 128) rms relative
// error; errors of the 16 chained quantized sublayers (8 layers x attention and FFN) add in quadrature:
// sqrt(16) x 0.11 = 0.44. The bound is 0.5 (the FP8 tests measured ~half their sqrt(16) estimate, as the
// residual stream carries the unquantized embedding). A format error (a nibble order, a zero point on the
// wrong row, a scale of the wrong group) gives errors of order 1.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>

#include "../common/quant_int4_fixture.h"
#include "config/quant_config.h"
#include "core/error.h"
#include "model/host_weights.h"
#include "model/quant_int4.h"
#include "model_test_util.h"
#include "quant_test_util.h"

namespace ds::test {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr double kInt4LogitBound = 0.5;  // see the file comment

TensorInfo info(const std::string& name, DType t, std::vector<int64_t> shape, const void* data) {
  TensorInfo i;
  i.name = name;
  i.dtype = t;
  i.shape = std::move(shape);
  i.data = data;
  i.nbytes = size_t(i.numel()) * dtype_size(t);
  return i;
}

TEST(Int4Format, NibblesAreLeastSignificantFirstWithOffsetEight) {
  // one row of 16 weights (two words), one group: amax 3.75 gives the symmetric scale 3.75 / 7.5 = 0.5;
  // w[k] = 0.5 (k - 8) is q = k - 8 for k = 1..14, -3.75 rounds to -8 (ties to even) and 3.75 to 8, clamped to 7
  std::vector<float> w(16);
  for (int k = 0; k < 16; ++k) w[size_t(k)] = 0.5f * float(k - 8);
  w[0] = -3.75f;
  w[15] = 3.75f;
  const Int4Quantized q = quantize_int4(w.data(), 1, 16, 32, true, DType::F32);
  ASSERT_EQ(q.packed.size(), 2u);
  EXPECT_EQ(q.scale32[0], 0.5f);
  // stored nibble k = q + 8 = k, at bits 4k of the first word and 4(k - 8) of the second
  EXPECT_EQ(uint32_t(q.packed[0]), 0x76543210u);
  EXPECT_EQ(uint32_t(q.packed[1]), 0xFEDCBA98u);
  // the loader's unpacking of those words
  const int64_t shape[2] = {1, 16};
  const TensorInfo pk = info("x.weight_packed", DType::I32, {1, 2}, q.packed.data());
  const TensorInfo sc = info("x.weight_scale", DType::F32, {1, 1}, q.scale32.data());
  const TensorInfo sh = info("x.weight_shape", DType::I64, {2}, shape);
  Int4Tensor t{&pk, &sc, nullptr, &sh, 1, 16, 32};
  std::vector<float> out(16);
  dequantize_int4(t, out.data());
  for (int k = 1; k < 15; ++k) EXPECT_EQ(out[size_t(k)], w[size_t(k)]) << k;
  EXPECT_EQ(out[0], -4.f);
  EXPECT_EQ(out[15], 3.5f);  // clamped to q = 7
}

TEST(Int4Format, ZeroPointsArePackedAlongTheRows) {
  // 9 rows x 8 columns, group 32 (one group): row r holds values in [0, r + 1] (asymmetric: min 0 -> z = -8)
  // and row 8 holds [-1, 2]; zero points of rows 0..7 share word [0][0], row 8 is in word [1][0]
  std::vector<float> w(9 * 8);
  for (int r = 0; r < 8; ++r)
    for (int k = 0; k < 8; ++k) w[size_t(r * 8 + k)] = float(r + 1) * float(k) / 7.f;
  for (int k = 0; k < 8; ++k) w[size_t(64 + k)] = -1.f + 3.f * float(k) / 7.f;
  const Int4Quantized q = quantize_int4(w.data(), 9, 8, 32, false, DType::F32);
  ASSERT_EQ(q.zero.size(), 2u);
  EXPECT_EQ(uint32_t(q.zero[0]), 0u);  // z = -8 stored as 0 for rows 0..7
  // row 8: scale 3/15 = 0.2, z = round(1 / 0.2) - 8 = -3, stored 5 in the lowest nibble of word [1][0]
  EXPECT_EQ(uint32_t(q.zero[1]), 5u);
  const int64_t shape[2] = {9, 8};
  const TensorInfo pk = info("x.weight_packed", DType::I32, {9, 1}, q.packed.data());
  const TensorInfo sc = info("x.weight_scale", DType::F32, {9, 1}, q.scale32.data());
  const TensorInfo zp = info("x.weight_zero_point", DType::I32, {2, 1}, q.zero.data());
  const TensorInfo sh = info("x.weight_shape", DType::I64, {2}, shape);
  Int4Tensor t{&pk, &sc, &zp, &sh, 9, 8, 32};
  std::vector<float> out(72);
  dequantize_int4(t, out.data());
  for (size_t i = 0; i < out.size(); ++i) {
    EXPECT_EQ(out[i], q.dequantized[i]) << i;
    EXPECT_NEAR(out[i], w[i], q.scale32[i / 8] * 0.5f + 1e-5f) << i;
  }
  EXPECT_EQ(int4_zeros_f32(t)[8], 5.f);
}

TEST(Int4Format, PartialGroupsAndBf16Scales) {
  // K = 40 with groups of 32: two groups, the second of 8 columns; scales rounded to bf16 before q
  std::vector<float> w(2 * 40);
  for (size_t i = 0; i < w.size(); ++i) w[i] = std::sin(float(i) * 0.7f) * (i % 40 < 32 ? 1.f : 0.01f);
  const Int4Quantized q = quantize_int4(w.data(), 2, 40, 32, true, DType::BF16);
  ASSERT_EQ(q.scale16.size(), 4u);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(bf16_to_f32(q.scale16[i]), q.scale32[i]);
  EXPECT_LT(q.scale32[1], 0.01f);  // the small second group has its own scale
  for (size_t i = 0; i < w.size(); ++i)
    // half a step, or a little more where the bf16-rounded scale makes amax / scale exceed 7.5 (clamped to 7)
    EXPECT_NEAR(q.dequantized[i], w[i], q.scale32[(i / 40) * 2 + (i % 40) / 32] * 0.52f) << i;
}

std::string config_error(const std::string& text) {
  try {
    parse_quant_config(json::parse(text));
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(Int4Config, ParsesPackQuantizedAndNamesWhatItRefuses) {
  const QuantConfig a = parse_quant_config(int4_quant_config(128, false));
  EXPECT_TRUE(a.int4());
  EXPECT_EQ(a.group_size, 128);
  EXPECT_FALSE(a.symmetric);
  EXPECT_TRUE(a.ignored("lm_head"));
  EXPECT_TRUE(a.ignored("model.layers.2.block_sparse_moe.gate"));
  EXPECT_FALSE(a.ignored("model.layers.2.block_sparse_moe.experts.3.w1"));
  EXPECT_NE(a.describe().find("int4"), std::string::npos);
  const QuantConfig b = parse_quant_config(int4_quant_config(32, true));
  EXPECT_EQ(b.group_size, 32);
  EXPECT_TRUE(b.symmetric);
  auto with = [](const std::function<void(json&)>& edit) {
    json q = int4_quant_config(128, true);
    edit(q["config_groups"]["group_0"]);
    return config_error(q.dump());
  };
  EXPECT_NE(with([](json& g) { g["weights"]["group_size"] = 64; }).find("group_size 64 is not supported"),
            std::string::npos);
  EXPECT_NE(with([](json& g) { g["weights"].erase("group_size"); }).find("group_size null"), std::string::npos);
  EXPECT_NE(with([](json& g) { g["weights"]["num_bits"] = 8; }).find("num_bits 8"), std::string::npos);
  EXPECT_NE(with([](json& g) { g["weights"]["strategy"] = "channel"; }).find("strategy 'channel'"), std::string::npos);
  EXPECT_NE(with([](json& g) { g["weights"]["actorder"] = "group"; }).find("actorder"), std::string::npos);
  EXPECT_NE(with([](json& g) { g["input_activations"] = {{"num_bits", 8}, {"dynamic", true}}; }).find("W4A16"),
            std::string::npos);
  // --quantization
  EXPECT_EQ(resolve_quantization(a, "int4").source, "compressed-tensors");
  EXPECT_EQ(resolve_quantization(a, "compressed-tensors").group_size, 128);
  EXPECT_THROW(resolve_quantization(a, "fp8"), Error);
  EXPECT_THROW(resolve_quantization(QuantConfig{}, "int4"), Error);  // a bf16 checkpoint, no dummy weights
  EXPECT_THROW(resolve_quantization(QuantConfig{}, "compressed-tensors"), Error);
  const QuantConfig d = resolve_quantization(QuantConfig{}, "int4", /*dummy=*/true);
  EXPECT_TRUE(d.int4());
  EXPECT_EQ(d.source, "dummy");
  EXPECT_EQ(d.group_size, kDummyInt4Group);
}

// Every weight the fixture quantized loads as exactly (q - z) * scale; the others as in the bf16 checkpoint.
void expect_exact_weights(int group, bool symmetric) {
  auto fx = make_int4_fixture(tiny_model_dir(), group, symmetric);
  const ModelConfig c = ModelConfig::from_file((fx->dir / "config.json").string());
  ASSERT_TRUE(c.quant.int4());
  HostWeights w = load_host_weights(c, Checkpoint::open(fx->dir.string()));
  HostWeights ref = load_host_weights(ModelConfig::from_file(tiny_model_dir() + "/config.json"),
                                      Checkpoint::open(tiny_model_dir()));
  std::map<std::string, const HostTensor*> ref_of;
  for_each_weight(c, ref, [&](const TensorSpec& s, HostTensor& t) { ref_of[s.name] = &t; });
  int checked = 0;
  for_each_weight(c, w, [&](const TensorSpec& s, HostTensor& t) {
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

TEST(Int4Loading, SymmetricGroup32LoadsExactly) { expect_exact_weights(32, true); }
TEST(Int4Loading, SymmetricGroup128LoadsExactly) { expect_exact_weights(128, true); }
TEST(Int4Loading, ZeroPointsGroup32LoadExactly) { expect_exact_weights(32, false); }
TEST(Int4Loading, ZeroPointsGroup128LoadExactly) { expect_exact_weights(128, false); }

// The error of loading a fixture edited by `edit` (its tensors and/or config).
std::string load_error(bool symmetric, const std::function<void(std::vector<TensorToWrite>&, json&)>& edit) {
  auto fx = make_int4_fixture(tiny_model_dir(), 32, symmetric);
  return edited_load_error(fx->dir, edit);
}

TEST(Int4Loading, MalformedCheckpointsAreNamedErrors) {
  const std::string x = "model.layers.1.block_sparse_moe.experts.3.w2.weight";  // [256, 64]
  auto drop = [](const std::string& name) {
    return [name](std::vector<TensorToWrite>& ts, json&) {
      std::erase_if(ts, [&](const TensorToWrite& t) { return t.name == name; });
    };
  };
  auto replace = [](const std::string& name, TensorToWrite with) {
    return [name, with](std::vector<TensorToWrite>& ts, json&) {
      for (auto& t : ts)
        if (t.name == name) t = with;
    };
  };
  static std::vector<int32_t> words(256 * 64, 0);
  static std::vector<float> ones(256 * 8, 1.f);
  static const int64_t wrong_shape[2] = {256, 72};
  std::string e = load_error(true, drop(x + "_scale"));
  EXPECT_NE(e.find(x + ": missing scale tensor weight_scale"), std::string::npos) << e;
  e = load_error(true, replace(x + "_scale", {x + "_scale", DType::F32, {256, 1}, ones.data()}));
  EXPECT_NE(e.find(x + "_scale is [256, 1], expected [256, 2] for group size 32"), std::string::npos) << e;
  e = load_error(true, replace(x + "_packed", {x + "_packed", DType::I32, {256, 16}, words.data()}));
  EXPECT_NE(e.find(x + "_packed is I32 [256, 16], expected I32 [256, 8]"), std::string::npos) << e;
  e = load_error(true, replace(x + "_packed", {x + "_packed", DType::F32, {256, 8}, ones.data()}));
  EXPECT_NE(e.find(x + "_packed is F32 [256, 8]"), std::string::npos) << e;
  e = load_error(true, replace(x + "_shape", {x + "_shape", DType::I64, {2}, wrong_shape}));
  EXPECT_NE(e.find(x + "_shape says [256, 72], expected [256, 64]"), std::string::npos) << e;
  e = load_error(true, drop(x + "_shape"));
  EXPECT_NE(e.find(x + ": missing " + x + "_shape"), std::string::npos) << e;
  e = load_error(false, drop(x + "_zero_point"));
  EXPECT_NE(e.find(x + ": missing zero points"), std::string::npos) << e;
  e = load_error(false, replace(x + "_zero_point", {x + "_zero_point", DType::I32, {256, 2}, words.data()}));
  EXPECT_NE(e.find(x + "_zero_point is I32 [256, 2], expected I32 [32, 2]"), std::string::npos) << e;
  e = load_error(false, [](std::vector<TensorToWrite>&, json& cfg) {  // zero points but a symmetric scheme
    cfg["quantization_config"]["config_groups"]["group_0"]["weights"]["symmetric"] = true;
  });
  EXPECT_NE(e.find("zero points in a symmetric scheme"), std::string::npos) << e;
  e = load_error(true, [&](std::vector<TensorToWrite>& ts, json&) {
    ts.push_back({x + "_g_idx", DType::I32, {64}, words.data()});
  });
  EXPECT_NE(e.find("act-order group indices"), std::string::npos) << e;
  e = load_error(true, [&](std::vector<TensorToWrite>&, json& cfg) {
    cfg["quantization_config"]["ignore"].push_back("model.layers.1.block_sparse_moe.experts.3.w2");
  });
  EXPECT_NE(e.find(x + " is INT4 but quantization_config.ignore lists it"), std::string::npos) << e;
  e = load_error(true, [](std::vector<TensorToWrite>&, json& cfg) {
    cfg["quantization_config"]["config_groups"]["group_0"]["weights"]["group_size"] = 96;
  });
  EXPECT_NE(e.find("group_size 96 is not supported"), std::string::npos) << e;
  // packed tensors without a quantization_config: unexpected tensors, and the weights are missing
  e = load_error(true, [](std::vector<TensorToWrite>&, json& cfg) { cfg.erase("quantization_config"); });
  EXPECT_NE(e.find("missing tensor"), std::string::npos) << e;
  EXPECT_NE(e.find("_packed"), std::string::npos) << e;
}

// Logits of len65 on a backend, routing free (both models compute from identical weights).
std::vector<float> logits_of(CpuBackend& b) { return pinned_logits(b, reference().i32("len65.ids"), nullptr); }

// The INT4 checkpoint's logits equal those of the same model with the dequantized weights stored in fp32.
void expect_matches_dequantized(int group, bool symmetric) {
  auto fx = make_int4_fixture(tiny_model_dir(), group, symmetric);
  const fs::path dq = fx->dir / "dequantized";
  fs::create_directories(dq);
  fs::copy_file(tiny_model_dir() + "/config.json", dq / "config.json");
  {
    const ModelConfig c = ModelConfig::from_file(tiny_model_dir() + "/config.json");
    Checkpoint ck = Checkpoint::open(tiny_model_dir());
    std::vector<TensorToWrite> out;
    for (const auto& s : weight_specs(c)) {
      auto it = fx->dequantized.find(s.name);
      const TensorInfo& t = ck.get(s.name);
      if (it == fx->dequantized.end()) out.push_back({t.name, t.dtype, t.shape, t.data});
      else out.push_back({s.name, DType::F32, s.shape, it->second.data()});
    }
    write_safetensors((dq / "model.safetensors").string(), out);
  }
  BackendOptions o = tiny_options();
  o.model_dir = fx->dir.string();
  CpuBackend q(o);
  o.model_dir = dq.string();
  CpuBackend f(o);
  const auto a = logits_of(q), b = logits_of(f);
  const double err = rel_l2(a, b);
  std::printf("  int4 g%d %s vs dequantized fp32 checkpoint: logits rel L2 %.3g\n", group,
              symmetric ? "sym" : "zp", err);
  EXPECT_LT(err, 1e-5);
}

TEST(Int4Accuracy, LogitsEqualTheDequantizedModelSymmetric32) { expect_matches_dequantized(32, true); }
TEST(Int4Accuracy, LogitsEqualTheDequantizedModelZeroPoints128) { expect_matches_dequantized(128, false); }

void expect_fixture_accuracy(int group, bool symmetric) {
  auto fx = make_int4_fixture(tiny_model_dir(), group, symmetric);
  BackendOptions o = tiny_options();
  o.model_dir = fx->dir.string();
  CpuBackend b(o);
  expect_accuracy(fmt::format("int4-g{}-{}", group, symmetric ? "sym" : "zp"), b, kInt4LogitBound);
}

TEST(Int4Accuracy, SymmetricGroup32AgainstReference) { expect_fixture_accuracy(32, true); }
TEST(Int4Accuracy, SymmetricGroup128AgainstReference) { expect_fixture_accuracy(128, true); }
TEST(Int4Accuracy, ZeroPointsGroup32AgainstReference) { expect_fixture_accuracy(32, false); }
TEST(Int4Accuracy, ZeroPointsGroup128AgainstReference) { expect_fixture_accuracy(128, false); }

TEST(Int4Dummy, DummyWeightsQuantizeTheExpertsOnly) {
  ModelConfig c = ModelConfig::from_file(tiny_model_dir() + "/config.json");
  const HostWeights plain = dummy_host_weights(c, 7);
  c.quant = resolve_quantization(c.quant, "int4", /*dummy=*/true);
  HostWeights q = dummy_host_weights(c, 7);
  HostWeights p = plain;
  std::map<std::string, const HostTensor*> plain_of;
  for_each_weight(c, p, [&](const TensorSpec& s, HostTensor& t) { plain_of[s.name] = &t; });
  int quantized = 0;
  for_each_weight(c, q, [&](const TensorSpec& s, HostTensor& t) {
    const auto& ref = plain_of.at(s.name)->data;
    ASSERT_EQ(t.data.size(), ref.size());
    if (!int4_dummy_candidate(s)) {
      EXPECT_EQ(t.data, ref) << s.name;
      return;
    }
    ++quantized;
    // a group of 128 holds at most 16 distinct values, each within half a step of the original
    const int64_t K = s.shape[1];
    std::set<float> distinct;
    float amax = 0.f, max_err = 0.f;
    for (int64_t k = 0; k < std::min<int64_t>(K, 128); ++k) {
      distinct.insert(t.data[size_t(k)]);
      amax = std::max(amax, std::fabs(ref[size_t(k)]));
      max_err = std::max(max_err, std::fabs(t.data[size_t(k)] - ref[size_t(k)]));
    }
    EXPECT_LE(distinct.size(), 16u) << s.name;
    EXPECT_LE(max_err, amax / 14.f) << s.name;  // half a step (amax / 15), bf16 scale rounding
  });
  EXPECT_GT(quantized, 50);
}

}  // namespace
}  // namespace ds::test
