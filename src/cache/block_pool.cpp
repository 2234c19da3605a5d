#include "cache/block_pool.h"

#include <algorithm>

#include "core/error.h"

namespace ds {

BlockPool::BlockPool(int num_blocks, int block_size)
    : num_blocks_(block_size > 0 ? num_blocks : 0), block_size_(block_size) {
  DS_CHECK(num_blocks >= 0, "BlockPool: num_blocks {} < 0", num_blocks);
  free_.reserve(size_t(num_blocks_));
  for (int i = num_blocks_ - 1; i >= 0; --i) free_.push_back(i);
  refs_.assign(size_t(num_blocks_), 0);
  lru_pos_.assign(size_t(num_blocks_), lru_.end());
  hash_of_.assign(size_t(num_blocks_), 0);
  hashed_.assign(size_t(num_blocks_), 0);
}

int BlockPool::blocks_for(int64_t tokens) const {
  if (!paging() || tokens <= 0) return 0;
  return int((tokens + block_size_ - 1) / block_size_);
}

void BlockPool::check(int32_t page, const char* what) const {
  DS_CHECK(page >= 0 && page < num_blocks_, "BlockPool::{}: page {} out of range [0, {})", what, page, num_blocks_);
}

int32_t BlockPool::take_page() {
  if (!free_.empty()) {
    const int32_t id = free_.back();
    free_.pop_back();
    return id;
  }
  const int32_t id = lru_.front();  // evict: the page forgets its contents
  lru_.pop_front();
  lru_pos_[size_t(id)] = lru_.end();
  by_hash_.erase(hash_of_[size_t(id)]);
  hashed_[size_t(id)] = 0;
  return id;
}

bool BlockPool::allocate(int n, std::vector<int32_t>* out) {
  DS_CHECK(n >= 0, "BlockPool::allocate: n {} < 0", n);
  if (n > num_free()) return false;
  for (int i = 0; i < n; ++i) {
    const int32_t id = take_page();
    refs_[size_t(id)] = 1;
    out->push_back(id);
  }
  return true;
}

void BlockPool::free(std::vector<int32_t>* blocks) {
  for (int32_t id : *blocks) decref(id);
  blocks->clear();
}

void BlockPool::share(int32_t page) {
  check(page, "share");
  const size_t p = size_t(page);
  if (refs_[p] == 0) {
    DS_CHECK(lru_pos_[p] != lru_.end(), "BlockPool::share: page {} is free", page);
    lru_.erase(lru_pos_[p]);
    lru_pos_[p] = lru_.end();
  }
  ++refs_[p];
}

void BlockPool::decref(int32_t page) {
  check(page, "free");
  const size_t p = size_t(page);
  DS_CHECK(refs_[p] > 0, "BlockPool::free: page {} is not in use", page);
  if (--refs_[p] > 0) return;
  if (hashed_[p]) {
    lru_pos_[p] = lru_.insert(lru_.end(), page);
  } else {
    free_.push_back(page);
  }
}

int BlockPool::refcount(int32_t page) const {
  check(page, "refcount");
  return refs_[size_t(page)];
}

bool BlockPool::register_hash(int32_t page, uint64_t hash) {
  check(page, "register_hash");
  const size_t p = size_t(page);
  DS_CHECK(refs_[p] > 0, "BlockPool::register_hash: page {} is not in use", page);
  DS_CHECK(!hashed_[p] || hash_of_[p] == hash, "BlockPool::register_hash: page {} already has another hash", page);
  auto [it, inserted] = by_hash_.try_emplace(hash, page);
  if (!inserted) return it->second == page;
  hash_of_[p] = hash;
  hashed_[p] = 1;
  return true;
}

int32_t BlockPool::lookup(uint64_t hash) const {
  auto it = by_hash_.find(hash);
  return it == by_hash_.end() ? -1 : it->second;
}

int BlockPool::clear_hashes() {
  const int registered = int(by_hash_.size());
  by_hash_.clear();
  lru_.clear();
  std::fill(lru_pos_.begin(), lru_pos_.end(), lru_.end());
  std::fill(hash_of_.begin(), hash_of_.end(), 0);
  std::fill(hashed_.begin(), hashed_.end(), 0);
  free_.clear();  // keeps its capacity (num_blocks)
  for (int i = num_blocks_ - 1; i >= 0; --i)
    if (refs_[size_t(i)] == 0) free_.push_back(i);
  return registered;
}

}  // namespace ds
