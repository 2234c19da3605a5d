#include "model/quant_int4.h"

#include <algorithm>
#include <cmath>

#include "core/dtype.h"
#include "core/error.h"
#include "core/parallel.h"
#include "model/quant.h"
#include "model/safetensors.h"

namespace ds {
namespace {

int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

std::string module_of(const std::string& weight) { return weight.substr(0, weight.size() - 7); }  // "...weight"

std::string list_some(const std::vector<std::string>& items, size_t max_items = 5) {
  std::string s;
  for (size_t i = 0; i < items.size() && i < max_items; ++i) s += (i ? "; " : "") + items[i];
  if (items.size() > max_items) s += fmt::format(" (and {} more)", items.size() - max_items);
  return s;
}

template <typename... A>
void add(std::vector<std::string>& problems, fmt::format_string<A...> f, A&&... a) {
  problems.push_back(fmt::format(f, std::forward<A>(a)...));
}

bool is_scale_dtype(DType t) { return t == DType::F32 || t == DType::BF16 || t == DType::F16; }

// The stored (unsigned) nibble of weight k in a row of packed words.
inline int nibble(const int32_t* row, int64_t k) { return int((uint32_t(row[k >> 3]) >> (4 * (k & 7))) & 15u); }

// The validation of one INT4 weight (the names in `n`: packed, scale, zero, shape, g_idx); problems appended.
bool check_one(const ModelConfig& c, const Checkpoint& ck, const TensorSpec& s, Int4Tensor& t,
               std::vector<std::string>& problems) {
  const QuantConfig& q = c.quant;
  const auto n = int4_tensor_names(s.name);
  t.packed = ck.find(n[0]);
  t.scale = ck.find(n[1]);
  t.zero = ck.find(n[2]);
  t.shape = ck.find(n[3]);
  const size_t before = problems.size();
  if (ck.find(s.name)) add(problems, "{} is present both unpacked and as {}", s.name, n[0]);
  if (!fp8_storable(s)) add(problems, "{} cannot be INT4 (only Linear weights can)", s.name);
  if (q.ignored(module_of(s.name))) add(problems, "{} is INT4 but quantization_config.ignore lists it", s.name);
  if (ck.find(n[4])) add(problems, "{}: act-order group indices ({}) are not supported", s.name, n[4]);
  if (problems.size() != before) return false;
  const int64_t N = s.shape[0], K = s.shape[1], g = q.group_size;
  t.rows = N;
  t.cols = K;
  t.group = g;
  if (t.packed->dtype != DType::I32 || t.packed->shape != std::vector<int64_t>{N, cdiv(K, 8)})
    add(problems, "{} is {} {}, expected I32 [{}, {}] (8 weights per word along the {} inputs)", n[0],
            dtype_name(t.packed->dtype), shape_str(t.packed->shape), N, cdiv(K, 8), K);
  if (!t.scale)
    add(problems, "{}: missing scale tensor weight_scale", s.name);
  else if (!is_scale_dtype(t.scale->dtype))
    add(problems, "{} has dtype {} (F32, BF16 or F16 expected)", n[1], dtype_name(t.scale->dtype));
  else if (t.scale->shape != std::vector<int64_t>{N, cdiv(K, g)})
    add(problems, "{} is {}, expected [{}, {}] for group size {}", n[1], shape_str(t.scale->shape), N, cdiv(K, g), g);
  if (!t.shape) {
    add(problems, "{}: missing {}", s.name, n[3]);
  } else if ((t.shape->dtype != DType::I32 && t.shape->dtype != DType::I64) || t.shape->numel() != 2) {
    add(problems, "{} is {} {}, expected I32 or I64 [2]", n[3], dtype_name(t.shape->dtype), shape_str(t.shape->shape));
  } else {
    int64_t v[2];
    for (int i = 0; i < 2; ++i)
      v[i] = t.shape->dtype == DType::I32 ? static_cast<const int32_t*>(t.shape->data)[i]
                                          : static_cast<const int64_t*>(t.shape->data)[i];
    if (v[0] != N || v[1] != K) add(problems, "{} says [{}, {}], expected [{}, {}]", n[3], v[0], v[1], N, K);
  }
  if (q.symmetric && t.zero) add(problems, "{}: zero points in a symmetric scheme", n[2]);
  if (!q.symmetric) {
    if (!t.zero)
      add(problems, "{}: missing zero points {} (the scheme is asymmetric)", s.name, n[2]);
    else if (t.zero->dtype != DType::I32 || t.zero->shape != std::vector<int64_t>{cdiv(N, 8), cdiv(K, g)})
      add(problems, "{} is {} {}, expected I32 [{}, {}]", n[2], dtype_name(t.zero->dtype), shape_str(t.zero->shape),
              cdiv(N, 8), cdiv(K, g));
  }
  return problems.size() == before;
}

}  // namespace

bool int4_dummy_candidate(const TensorSpec& s) {
  const std::string& n = s.name;
  return fp8_storable(s) && (n.find(".experts.") != std::string::npos || n.find(".shared_experts.") != std::string::npos ||
                             n.find(".mlp.") != std::string::npos);
}

std::vector<std::string> int4_tensor_names(const std::string& weight) {
  return {weight + "_packed", weight + "_scale", weight + "_zero_point", weight + "_shape", weight + "_g_idx"};
}

std::map<std::string, Int4Tensor> find_int4(const ModelConfig& c, const Checkpoint& ck) {
  std::map<std::string, Int4Tensor> out;
  std::vector<std::string> problems;
  DS_CHECK(c.quant.int4(), "find_int4: the checkpoint is not INT4");
  for (const auto& s : weight_specs(c)) {
    const auto n = int4_tensor_names(s.name);
    if (!ck.find(n[0])) {
      for (size_t i = 1; i < n.size(); ++i)
        if (ck.find(n[i])) problems.push_back(fmt::format("{} is present but {} is not INT4 (no {})", n[i], s.name, n[0]));
      if (ck.find(s.name) && ck.find(s.name)->dtype == DType::F8_E4M3)
        problems.push_back(fmt::format("{} is F8_E4M3 in an INT4 checkpoint", s.name));
      continue;
    }
    Int4Tensor t;
    if (check_one(c, ck, s, t, problems)) out[s.name] = t;
  }
  if (!problems.empty())
    fail("INT4 checkpoint '{}' is malformed: {} problem(s): {}", ck.path(), problems.size(), list_some(problems));
  return out;
}

bool is_int4_companion(const ModelConfig& c, const Checkpoint& ck, const std::string& name) {
  for (const char* suffix : {"_packed", "_scale", "_zero_point", "_shape", "_g_idx"}) {
    const std::string_view sx(suffix);
    if (name.size() > sx.size() && name.compare(name.size() - sx.size(), sx.size(), sx) == 0) {
      const std::string w = name.substr(0, name.size() - sx.size());
      return c.quant.int4() && ck.find(w + "_packed") != nullptr && w.size() > 7 &&
             w.compare(w.size() - 7, 7, ".weight") == 0;
    }
  }
  return false;
}

std::vector<float> int4_scales_f32(const Int4Tensor& t) {
  std::vector<float> s(size_t(t.scale->numel()));
  convert_to_f32(t.scale->dtype, t.scale->data, s.data(), s.size());
  for (float v : s) DS_CHECK(std::isfinite(v), "{}: scale {} is not finite", t.scale->name, v);
  return s;
}

std::vector<float> int4_zeros_f32(const Int4Tensor& t) {
  const int64_t G = cdiv(t.cols, t.group);
  std::vector<float> z(size_t(t.rows * G), 8.f);
  if (!t.zero) return z;
  const auto* zp = static_cast<const int32_t*>(t.zero->data);
  for (int64_t r = 0; r < t.rows; ++r)
    for (int64_t j = 0; j < G; ++j)
      z[size_t(r * G + j)] = float((uint32_t(zp[(r >> 3) * G + j]) >> (4 * (r & 7))) & 15u);
  return z;
}

void dequantize_int4(const Int4Tensor& t, float* out) {
  const std::vector<float> s = int4_scales_f32(t), z = int4_zeros_f32(t);
  const int64_t N = t.rows, K = t.cols, G = cdiv(K, t.group), words = cdiv(K, 8);
  const auto* w = static_cast<const int32_t*>(t.packed->data);
  parallel_for(size_t(N), [&](size_t b, size_t e) {
    for (int64_t r = int64_t(b); r < int64_t(e); ++r)
      for (int64_t k = 0; k < K; ++k) {
        const size_t gi = size_t(r * G + k / t.group);
        out[r * K + k] = (float(nibble(w + r * words, k)) - z[gi]) * s[gi];
      }
  });
}

Int4Quantized quantize_int4(const float* w, int64_t N, int64_t K, int group, bool symmetric, DType scale_dtype) {
  DS_CHECK(is_scale_dtype(scale_dtype), "quantize_int4: scale dtype {}", dtype_name(scale_dtype));
  const int64_t G = cdiv(K, group), words = cdiv(K, 8);
  Int4Quantized o;
  o.packed.assign(size_t(N * words), 0);
  o.scale32.assign(size_t(N * G), 0.f);
  if (scale_dtype != DType::F32) o.scale16.assign(size_t(N * G), 0);
  if (!symmetric) o.zero.assign(size_t(cdiv(N, 8) * G), 0);
  o.dequantized.assign(size_t(N * K), 0.f);
  auto store_scale = [&](size_t i, float v) {
    if (scale_dtype == DType::BF16) {
      o.scale16[i] = f32_to_bf16(v);
      v = bf16_to_f32(o.scale16[i]);
    } else if (scale_dtype == DType::F16) {
      o.scale16[i] = f32_to_f16(v);
      v = f16_to_f32(o.scale16[i]);
    }
    o.scale32[i] = v;
    return v;
  };
  for (int64_t r = 0; r < N; ++r)
    for (int64_t j = 0; j < G; ++j) {
      const int64_t k0 = j * group, k1 = std::min(K, k0 + group);
      float lo = 0.f, hi = 0.f;  // the range includes 0
      for (int64_t k = k0; k < k1; ++k) {
        lo = std::min(lo, w[r * K + k]);
        hi = std::max(hi, w[r * K + k]);
      }
      const size_t si = size_t(r * G + j);
      float raw = symmetric ? std::max(-lo, hi) / 7.5f : (hi - lo) / 15.f;
      if (!(raw > 0.f)) raw = 1.f;
      const float scale = store_scale(si, raw);
      int z = 0;
      if (!symmetric) {
        z = std::clamp(int(std::nearbyint(-lo / scale)) - 8, -8, 7);
        o.zero[size_t((r >> 3) * G + j)] |= int32_t(uint32_t(z + 8) << (4 * (r & 7)));
      }
      for (int64_t k = k0; k < k1; ++k) {
        const int qv = std::clamp(int(std::nearbyint(w[r * K + k] / scale)) + z, -8, 7);
        o.packed[size_t(r * words + (k >> 3))] |= int32_t(uint32_t(qv + 8) << (4 * (k & 7)));
        o.dequantized[size_t(r * K + k)] = float(qv - z) * scale;
      }
    }
  return o;
}

}  // namespace ds
