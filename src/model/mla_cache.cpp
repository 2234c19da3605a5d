#include "model/mla_cache.h"

#include <algorithm>

#include "core/error.h"

namespace ds {

MlaLatentCache::MlaLatentCache(const ModelConfig& c, int num_blocks, int block_size, KvCacheDtype dtype)
    : num_blocks_(num_blocks), block_size_(block_size), latent_dim_(c.mla.latent_dim()), dtype_(dtype) {
  DS_CHECK(block_size > 0, "MLA cache block_size must be positive, got {}", block_size);
  DS_CHECK(num_blocks >= 0, "MLA cache num_blocks must be >= 0, got {}", num_blocks);
  for (int i = 0; i < c.num_mla_layers(); ++i)
    pools_.emplace_back(size_t(num_blocks) * size_t(block_size) * size_t(latent_dim_));
}

float* MlaLatentCache::row(int mla_layer, const std::vector<int32_t>& block_table, int64_t pos) const {
  const int64_t page = pos / block_size_;
  DS_CHECK(page < int64_t(block_table.size()), "MLA cache: position {} needs page {} but the block table has {}",
           pos, page, block_table.size());
  const int32_t b = block_table[size_t(page)];
  DS_CHECK(b >= 0 && b < num_blocks_, "MLA cache: block id {} is outside 0..{}", b, num_blocks_ - 1);
  return pool(mla_layer) + (int64_t(b) * block_size_ + pos % block_size_) * latent_dim_;
}

void MlaLatentCache::store(int mla_layer, const std::vector<int32_t>& block_table, int64_t pos, const float* latent) {
  float* dst = row(mla_layer, block_table, pos);
  std::copy_n(latent, latent_dim_, dst);
  if (dtype_ == KvCacheDtype::Fp8) fp8_latent_round_trip(dst, latent_dim_);
}

void MlaLatentCache::copy_rows(int src, int dst, int rows) {
  DS_CHECK(src >= 0 && src < num_blocks_ && dst >= 0 && dst < num_blocks_ && src != dst,
           "MLA cache: page copy {} -> {} outside 0..{} or onto itself", src, dst, num_blocks_ - 1);
  DS_CHECK(rows > 0 && rows <= block_size_, "MLA cache: copy of {} rows (page of {})", rows, block_size_);
  const size_t page = size_t(block_size_) * size_t(latent_dim_);
  for (auto& b : pools_) std::copy_n(b.data() + size_t(src) * page, size_t(rows) * size_t(latent_dim_),
                                     b.data() + size_t(dst) * page);
}

size_t MlaLatentCache::bytes() const {
  return pools_.size() * size_t(num_blocks_) * size_t(block_size_) * size_t(latent_dim_) * sizeof(float);
}

}  // namespace ds
