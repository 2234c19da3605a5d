// Host bookkeeping of the paged MLA latent cache: which fixed-size pages are free. No storage here;
// the backend owns the page memory and reads a sequence's pages through SeqSlice::block_table.
// Invariants: every page id is either on the free list or owned by exactly one sequence; allocation
// is all-or-nothing; freeing a page that is not in use is an error.
#pragma once
#include <cstdint>
#include <vector>

namespace ds {

class BlockPool {
 public:
  // block_size <= 0 or num_blocks == 0 with block_size <= 0: paging disabled (a model without MLA
  // layers); then every request for pages succeeds with no ids.
  BlockPool(int num_blocks, int block_size);

  int num_blocks() const { return num_blocks_; }
  int block_size() const { return block_size_; }
  bool paging() const { return block_size_ > 0; }
  int num_free() const { return int(free_.size()); }
  int num_used() const { return num_blocks_ - num_free(); }
  double usage() const { return num_blocks_ ? double(num_used()) / num_blocks_ : 0.0; }
  int64_t capacity_tokens() const { return int64_t(num_blocks_) * block_size_; }

  // Pages needed to hold `tokens` positions (0 when paging is disabled).
  int blocks_for(int64_t tokens) const;
  // Appends n page ids to *out; false (and nothing taken) when fewer than n are free.
  bool allocate(int n, std::vector<int32_t>* out);
  // Returns the pages to the free list and clears *blocks.
  void free(std::vector<int32_t>* blocks);

 private:
  int num_blocks_;
  int block_size_;
  std::vector<int32_t> free_;   // stack of free ids (lowest ids handed out first)
  std::vector<uint8_t> in_use_; // [num_blocks]
};

}  // namespace ds
