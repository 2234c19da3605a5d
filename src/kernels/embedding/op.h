// Embedding gather on fp32 host memory (CPU twin): y[t] = table[ids[t]].
#pragma once
#include <cstdint>

namespace ds::kernels {

struct EmbeddingParams {
  const int32_t* ids = nullptr;  // [T]; each in [0, vocab), else ds::Error
  const float* table = nullptr;  // [vocab, dim]
  float* y = nullptr;            // [T, dim]
  int64_t T = 0, vocab = 0, dim = 0;
};
void run_embedding_cpu(const EmbeddingParams& p);

}  // namespace ds::kernels
