// Scalar activation helpers shared by the CPU op twins (fp32 in, fp32 out).
#pragma once
#include <cmath>

namespace ds::kernels {

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

inline float silu(float x) { return x / (1.0f + std::exp(-x)); }

// softplus with beta 1 and PyTorch's threshold: x itself above `threshold`.
inline float softplus(float x, float threshold = 20.0f) {
  return x > threshold ? x : std::log1p(std::exp(x));
}

}  // namespace ds::kernels
