#include <cstring>

#include "core/error.h"
#include "kernels/embedding/op.h"

namespace ds::kernels {

void run_embedding_cpu(const EmbeddingParams& p) {
  for (int64_t t = 0; t < p.T; ++t) {
    const int32_t id = p.ids[t];
    DS_CHECK(id >= 0 && id < p.vocab, "embedding: token id {} at position {} is outside the vocabulary "
             "(size {})", id, t, p.vocab);
    std::memcpy(p.y + t * p.dim, p.table + int64_t(id) * p.dim, size_t(p.dim) * sizeof(float));
  }
}

}  // namespace ds::kernels
