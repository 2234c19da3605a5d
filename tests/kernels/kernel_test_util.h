// Helpers of the op tests: deterministic random data, error metrics, golden tensors.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../common/metrics.h"  // rel_l2
#include "core/dtype.h"
#include "model/safetensors.h"

namespace ds::test {

inline std::vector<float> randn(size_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

inline std::vector<float> uniform(size_t n, uint64_t seed, float lo, float hi) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

inline std::vector<float> golden_f32(const SafetensorsFile& f, const std::string& name) {
  const TensorInfo* t = f.find(name);
  if (!t) throw std::runtime_error("no golden tensor " + name);
  std::vector<float> v(size_t(t->numel()));
  convert_to_f32(t->dtype, t->data, v.data(), v.size());
  return v;
}

}  // namespace ds::test
