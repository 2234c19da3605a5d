// Host bookkeeping of the paged MLA latent cache: which fixed-size pages are free, how many sequences
// reference each page, and which full pages are addressable by the hash of their contents. No storage
// here; the backend owns the page memory and reads a sequence's pages through SeqSlice::block_table.
//
// A page is either free, referenced (refcount >= 1: allocate() gives 1, share() adds one per extra
// sequence, free()/decref() remove one) or cached (refcount 0 but registered under a content hash:
// lookup() still finds it, and share() takes it back). At refcount 0 an unhashed page returns to the
// free list; a cached one is evicted, least recently released first, when allocate() finds the free
// list empty. Allocation is all-or-nothing; releasing a page that is not referenced is an error.
// The scheduler allocates and frees only; the hash map is for prefix caching (issue 14), and
// clear_hashes() empties it (POST /reset_prefix_cache).
#pragma once
#include <cstdint>
#include <list>
#include <unordered_map>
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
  // Pages allocate() can hand out: free ones plus cached (unreferenced, hashed) ones.
  int num_free() const { return int(free_.size() + lru_.size()); }
  int num_used() const { return num_blocks_ - num_free(); }  // referenced pages
  int num_cached() const { return int(lru_.size()); }
  double usage() const { return num_blocks_ ? double(num_used()) / num_blocks_ : 0.0; }
  int64_t capacity_tokens() const { return int64_t(num_blocks_) * block_size_; }

  // Pages needed to hold `tokens` positions (0 when paging is disabled).
  int blocks_for(int64_t tokens) const;
  // Appends n page ids (refcount 1) to *out; false (and nothing taken) when fewer than n are free.
  // Evicts cached pages, least recently released first, when the free list runs out.
  bool allocate(int n, std::vector<int32_t>* out);
  // Releases one reference to each page and clears *blocks.
  void free(std::vector<int32_t>* blocks);

  // One more reference to a referenced or cached page (a cached one leaves the eviction order).
  void share(int32_t page);
  // One reference less; at 0 the page returns to the free list, or becomes cached if hashed.
  void decref(int32_t page);
  int refcount(int32_t page) const;

  // Registers a referenced page (full, its contents final) under `hash`. False when another page
  // already holds that hash (the page stays unregistered). A page holds at most one hash.
  bool register_hash(int32_t page, uint64_t hash);
  // The page registered under `hash` (referenced or cached), or -1. Take it with share().
  int32_t lookup(uint64_t hash) const;
  // Forgets every content hash (a prefix-cache reset): cached pages (refcount 0) become free pages, and
  // referenced ones stay referenced but lookup() no longer finds them (at refcount 0 they return to the
  // free list like any unhashed page). The free list is rebuilt in id order, lowest first, as at
  // construction. Returns how many pages were registered. References are untouched.
  int clear_hashes();

 private:
  void check(int32_t page, const char* what) const;
  int32_t take_page();  // a free page, else the least recently released cached one

  int num_blocks_;
  int block_size_;
  std::vector<int32_t> free_;      // stack of free, unhashed ids (lowest ids handed out first)
  std::vector<int32_t> refs_;      // [num_blocks] references
  std::list<int32_t> lru_;         // cached pages, least recently released first
  std::vector<std::list<int32_t>::iterator> lru_pos_;  // [num_blocks] position in lru_ when cached
  std::unordered_map<uint64_t, int32_t> by_hash_;
  std::vector<uint64_t> hash_of_;  // [num_blocks]
  std::vector<uint8_t> hashed_;    // [num_blocks]
};

}  // namespace ds
