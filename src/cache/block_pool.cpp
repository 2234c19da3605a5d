#include "cache/block_pool.h"

#include "core/error.h"

namespace ds {

BlockPool::BlockPool(int num_blocks, int block_size)
    : num_blocks_(block_size > 0 ? num_blocks : 0), block_size_(block_size) {
  DS_CHECK(num_blocks >= 0, "BlockPool: num_blocks {} < 0", num_blocks);
  free_.reserve(size_t(num_blocks_));
  for (int i = num_blocks_ - 1; i >= 0; --i) free_.push_back(i);
  in_use_.assign(size_t(num_blocks_), 0);
}

int BlockPool::blocks_for(int64_t tokens) const {
  if (!paging() || tokens <= 0) return 0;
  return int((tokens + block_size_ - 1) / block_size_);
}

bool BlockPool::allocate(int n, std::vector<int32_t>* out) {
  DS_CHECK(n >= 0, "BlockPool::allocate: n {} < 0", n);
  if (n > num_free()) return false;
  for (int i = 0; i < n; ++i) {
    int32_t id = free_.back();
    free_.pop_back();
    in_use_[size_t(id)] = 1;
    out->push_back(id);
  }
  return true;
}

void BlockPool::free(std::vector<int32_t>* blocks) {
  for (int32_t id : *blocks) {
    DS_CHECK(id >= 0 && id < num_blocks_, "BlockPool::free: page {} out of range [0, {})", id,
             num_blocks_);
    DS_CHECK(in_use_[size_t(id)], "BlockPool::free: page {} is not in use", id);
    in_use_[size_t(id)] = 0;
    free_.push_back(id);
  }
  blocks->clear();
}

}  // namespace ds
