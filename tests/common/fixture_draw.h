// Test utility: deterministic random weights for quantized fixtures of an edited config (a weight whose
// shape differs from the source checkpoint's): normal values, sigma 0.05, a seed from the tensor's name.
#pragma once
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace ds::test {

inline std::vector<float> draw_weights(const std::string& name, int64_t numel) {
  std::vector<float> v(static_cast<size_t>(numel));
  uint64_t st = std::hash<std::string>{}(name) | 1;
  auto u = [&] {  // xorshift64, (0, 1)
    st ^= st << 13, st ^= st >> 7, st ^= st << 17;
    return (double(st >> 11) + 0.5) / 9007199254740992.0;
  };
  for (auto& x : v) x = float(0.05 * std::sqrt(-2.0 * std::log(u())) * std::cos(6.283185307179586 * u()));
  return v;
}

}  // namespace ds::test
