#include "model/quant.h"

#include <algorithm>
#include <cmath>

#include "core/dtype.h"
#include "core/error.h"
#include "model/safetensors.h"

namespace ds {
namespace {

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
bool contains(const std::string& s, std::string_view part) { return s.find(part) != std::string::npos; }

std::string module_of(const std::string& weight) { return weight.substr(0, weight.size() - 7); }  // "...weight"

int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

std::string list_some(const std::vector<std::string>& items, size_t max_items = 5) {
  std::string s;
  for (size_t i = 0; i < items.size() && i < max_items; ++i) s += (i ? "; " : "") + items[i];
  if (items.size() > max_items) s += fmt::format(" (and {} more)", items.size() - max_items);
  return s;
}

// The scale shapes each scheme allows.
bool scale_shape_ok(const QuantConfig& q, const std::vector<int64_t>& s, int64_t N, int64_t K) {
  switch (q.scales) {
    case Fp8Scales::Channel: return s == std::vector<int64_t>{N, 1} || s == std::vector<int64_t>{N};
    case Fp8Scales::Tensor: return s.empty() || s == std::vector<int64_t>{1} || s == std::vector<int64_t>{1, 1};
    case Fp8Scales::Block: return s == std::vector<int64_t>{cdiv(N, q.block_n), cdiv(K, q.block_k)};
  }
  return false;
}

std::string expected_scale_shape(const QuantConfig& q, int64_t N, int64_t K) {
  switch (q.scales) {
    case Fp8Scales::Channel: return fmt::format("[{}, 1]", N);
    case Fp8Scales::Tensor: return "[1]";
    case Fp8Scales::Block: return fmt::format("[{}, {}]", cdiv(N, q.block_n), cdiv(K, q.block_k));
  }
  return "?";
}

}  // namespace

bool fp8_storable(const TensorSpec& s) {
  return s.shape.size() == 2 && ends_with(s.name, ".weight") && s.name != "model.embed_tokens.weight" &&
         !ends_with(s.name, "norm.weight");
}

bool fp8_on_device(const TensorSpec& s) {
  if (!fp8_storable(s)) return false;
  const std::string& n = s.name;
  if (contains(n, ".self_attn.")) {
    for (const char* p : {"q_proj.weight", "k_proj.weight", "v_proj.weight", "f_a_proj.weight", "g_a_proj.weight",
                          "o_proj.weight"})
      if (ends_with(n, std::string(".self_attn.") + p)) return true;
    return false;
  }
  if (contains(n, ".mlp.") || contains(n, ".shared_experts.") || contains(n, ".experts.")) return true;
  return false;  // lm_head, routers
}

bool online_fp8_candidate(const ModelConfig&, const TensorSpec& s) {
  return fp8_on_device(s) && s.shape[0] % kOnlineFp8Block == 0 && s.shape[1] % kOnlineFp8Block == 0;
}

std::map<std::string, QuantizedTensor> find_quantized(const ModelConfig& c, const Checkpoint& ck) {
  std::map<std::string, QuantizedTensor> out;
  std::vector<std::string> problems;
  const QuantConfig& q = c.quant;
  for (const auto& s : weight_specs(c)) {
    const TensorInfo* w = ck.find(s.name);
    const bool is_fp8 = w && w->dtype == DType::F8_E4M3;
    const TensorInfo* sc = nullptr;
    const TensorInfo* other = nullptr;  // a scale of the name the scheme does not use
    for (const auto& n : scale_names_for(s.name)) {
      const TensorInfo* t = ck.find(n.name);
      if (!t) continue;
      if (q.quantized() && n.inverse == q.scale_is_inverse()) sc = t;
      else other = t;
    }
    if (!is_fp8) {
      if (sc || other) problems.push_back(fmt::format("{} has a scale tensor but is not FP8", s.name));
      continue;
    }
    if (!q.quantized()) {
      problems.push_back(fmt::format("{} is F8_E4M3 but config.json has no quantization_config", s.name));
      continue;
    }
    if (!fp8_storable(s)) {
      problems.push_back(fmt::format("{} cannot be FP8 (only Linear weights can)", s.name));
      continue;
    }
    if (w->shape != s.shape) continue;  // check_checkpoint names it
    const int64_t N = s.shape[0], K = s.shape[1];
    const char* want = q.scale_is_inverse() ? "weight_scale_inv" : "weight_scale";
    if (!sc) {
      problems.push_back(other ? fmt::format("{}: {} expected, found {}", s.name, want, other->name)
                               : fmt::format("{}: missing scale tensor {}", s.name, want));
      continue;
    }
    if (sc->dtype != DType::F32 && sc->dtype != DType::BF16 && sc->dtype != DType::F16) {
      problems.push_back(fmt::format("{} has dtype {} (F32, BF16 or F16 expected)", sc->name, dtype_name(sc->dtype)));
      continue;
    }
    if (!scale_shape_ok(q, sc->shape, N, K)) {
      problems.push_back(fmt::format("{} is {}, expected {} for {}", sc->name, shape_str(sc->shape),
                                     expected_scale_shape(q, N, K), q.describe()));
      continue;
    }
    if (q.ignored(module_of(s.name))) {
      problems.push_back(fmt::format("{} is FP8 but quantization_config.ignore lists it", s.name));
      continue;
    }
    out[s.name] = QuantizedTensor{w, sc, N, K};
  }
  if (!problems.empty())
    fail("quantized checkpoint '{}' is malformed: {} problem(s): {}", ck.path(), problems.size(), list_some(problems));
  return out;
}

std::vector<float> fp8_scales_f32(const QuantConfig& q, const QuantizedTensor& t) {
  std::vector<float> raw(size_t(t.scale->numel()));
  convert_to_f32(t.scale->dtype, t.scale->data, raw.data(), raw.size());
  for (float v : raw)
    DS_CHECK(std::isfinite(v), "{}: scale {} is not finite", t.scale->name, v);
  if (q.scales == Fp8Scales::Tensor) return std::vector<float>(size_t(t.rows), raw.at(0));
  return raw;
}

std::vector<float> pad_scale_rows(std::vector<float> s, int64_t row_len, int64_t ld) {
  if (ld == row_len) return s;
  DS_CHECK(row_len > 0 && ld > row_len && int64_t(s.size()) % row_len == 0,
           "FP8 scales: {} values are not rows of {} to lay out {} apart", s.size(), row_len, ld);
  const int64_t rows = int64_t(s.size()) / row_len;
  std::vector<float> out(size_t(rows * ld), 0.f);
  for (int64_t r = 0; r < rows; ++r)
    std::copy(s.begin() + r * row_len, s.begin() + (r + 1) * row_len, out.begin() + r * ld);
  return out;
}

void dequantize_fp8(const QuantConfig& q, const QuantizedTensor& t, float* out) {
  const std::vector<float> s = fp8_scales_f32(q, t);
  const auto* w = static_cast<const uint8_t*>(t.weight->data);
  const int64_t N = t.rows, K = t.cols;
  const bool block = q.scales == Fp8Scales::Block;
  const int64_t ld = block ? cdiv(K, q.block_k) : 1;
  for (int64_t r = 0; r < N; ++r)
    for (int64_t k = 0; k < K; ++k) {
      const float sc = block ? s[size_t((r / q.block_n) * ld + k / q.block_k)] : s[size_t(r)];
      out[r * K + k] = fp8_e4m3_to_f32(w[r * K + k]) * sc;
    }
}

void quantize_fp8_blocks(const float* w, int64_t N, int64_t K, int bn, int bk, uint8_t* q, float* scale) {
  const int64_t ld = cdiv(K, bk);
  for (int64_t br = 0; br < cdiv(N, bn); ++br)
    for (int64_t bc = 0; bc < ld; ++bc) {
      const int64_t r1 = std::min(N, (br + 1) * bn), c1 = std::min(K, (bc + 1) * bk);
      float amax = 0.f;
      for (int64_t r = br * bn; r < r1; ++r)
        for (int64_t k = bc * bk; k < c1; ++k) amax = std::max(amax, std::fabs(w[r * K + k]));
      const float s = amax > 0.f ? amax / kFp8Max : 1.f;
      scale[br * ld + bc] = s;
      for (int64_t r = br * bn; r < r1; ++r)
        for (int64_t k = bc * bk; k < c1; ++k) q[r * K + k] = f32_to_fp8_e4m3(w[r * K + k] / s);
    }
}

void fake_quantize_fp8_blocks(float* w, int64_t N, int64_t K, int bn, int bk) {
  std::vector<uint8_t> q(size_t(N * K));
  std::vector<float> s(size_t(cdiv(N, bn) * cdiv(K, bk)));
  quantize_fp8_blocks(w, N, K, bn, bk, q.data(), s.data());
  const int64_t ld = cdiv(K, bk);
  for (int64_t r = 0; r < N; ++r)
    for (int64_t k = 0; k < K; ++k) w[r * K + k] = fp8_e4m3_to_f32(q[size_t(r * K + k)]) * s[size_t((r / bn) * ld + k / bk)];
}

}  // namespace ds
