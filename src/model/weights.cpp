#include "model/weights.h"

#include <set>

#include "core/error.h"
#include "model/quant.h"
#include "model/quant_int4.h"
#include "model/safetensors.h"

namespace ds {
namespace {

struct NoTensor {};

std::string list_some(const std::vector<std::string>& items, size_t max_items = 5) {
  std::string s;
  for (size_t i = 0; i < items.size() && i < max_items; ++i) s += (i ? ", " : "") + items[i];
  if (items.size() > max_items) s += fmt::format(" (and {} more)", items.size() - max_items);
  return s;
}

}  // namespace

std::vector<TensorSpec> weight_specs(const ModelConfig& c) {
  std::vector<TensorSpec> out;
  ModelWeights<NoTensor> w;
  for_each_weight(c, w, [&](const TensorSpec& s, NoTensor&) { out.push_back(s); });
  return out;
}

std::vector<ScaleTensor> scale_names_for(const std::string& weight) {
  static constexpr std::string_view kSuffix = ".weight";
  if (weight.size() < kSuffix.size() || weight.compare(weight.size() - kSuffix.size(), kSuffix.size(), kSuffix) != 0)
    return {};
  return {ScaleTensor{weight + "_scale", weight, false}, ScaleTensor{weight + "_scale_inv", weight, true}};
}

std::vector<ScaleTensor> find_scale_tensors(const ModelConfig& c, const Checkpoint& ck) {
  std::vector<ScaleTensor> out;
  for (const auto& s : weight_specs(c))
    for (auto& sc : scale_names_for(s.name))
      if (ck.find(sc.name)) out.push_back(std::move(sc));
  return out;
}

bool float_dtypes(const TensorSpec&, DType t) { return t == DType::BF16 || t == DType::F16 || t == DType::F32; }

void check_checkpoint(const ModelConfig& c, const Checkpoint& ck, DTypeAccepts accepts) {
  std::vector<std::string> missing, wrong_shape, wrong_dtype, unexpected, scales;
  std::set<std::string> expected;
  const bool quantized = c.quant.quantized() && c.quant.source != "online";
  const bool int4 = c.quant.int4();
  for (const auto& sc : find_scale_tensors(c, ck)) {
    expected.insert(sc.name);
    if (!quantized) scales.push_back(fmt::format("{} (of {})", sc.name, sc.weight));
  }
  for (const auto& s : weight_specs(c)) {
    expected.insert(s.name);
    const TensorInfo* t = ck.find(s.name);
    if (int4 && ck.find(s.name + "_packed")) {  // an INT4 weight: find_int4 checks its tensors
      for (auto& n : int4_tensor_names(s.name)) expected.insert(std::move(n));
      continue;
    }
    if (!t) {
      missing.push_back(s.name);
      continue;
    }
    if (t->shape != s.shape)
      wrong_shape.push_back(fmt::format("{} is {} in {}, expected {}", s.name, shape_str(t->shape), t->file,
                                        shape_str(s.shape)));
    if (!accepts(s, t->dtype) && !(quantized && c.quant.fp8() && t->dtype == DType::F8_E4M3 && fp8_storable(s)))
      wrong_dtype.push_back(fmt::format("{} has dtype {}", s.name, dtype_name(t->dtype)));
  }
  for (const auto& n : ck.names())
    if (!expected.count(n)) unexpected.push_back(n);
  if (missing.empty() && wrong_shape.empty() && wrong_dtype.empty() && unexpected.empty() && scales.empty()) {
    if (quantized && int4) find_int4(c, ck);  // packed tensors, scales, zero points (throws naming each problem)
    else if (quantized) find_quantized(c, ck);  // scale tensors and schemes (throws naming each problem)
    return;
  }
  std::string msg = fmt::format("checkpoint '{}' does not match the config:", ck.path());
  if (!missing.empty()) msg += fmt::format(" {} missing tensor(s): {};", missing.size(), list_some(missing));
  if (!wrong_shape.empty())
    msg += fmt::format(" {} tensor(s) with the wrong shape: {};", wrong_shape.size(), list_some(wrong_shape));
  if (!wrong_dtype.empty())
    msg += fmt::format(" {} tensor(s) with an unsupported dtype: {};", wrong_dtype.size(), list_some(wrong_dtype));
  if (!scales.empty())
    msg += fmt::format( " {} scale tensor(s) of quantized weights but config.json has no quantization_config: {};", scales.size(),
                       list_some(scales));
  if (!unexpected.empty())
    msg += fmt::format(" {} unexpected tensor(s): {};", unexpected.size(), list_some(unexpected));
  msg.pop_back();
  throw Error(msg);
}

}  // namespace ds
