// The vocabulary as the grammar matcher sees it: ordinary tokens by their bytes in a trie laid out in
// preorder (a subtree is a contiguous range, so skipping one is a jump), special tokens by name only,
// and the cache of per-node token masks (grammar/matcher.h), shared by every grammar bound to this
// vocabulary: a node's mask depends only on what can follow it inside its rule (Grammar::signature),
// so e.g. the JSON string rule's masks are computed once per process.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "grammar/grammar.h"

namespace ds {

// What one grammar node allows on its own (rule-local, context-independent), computed once:
// `accepted` tokens are valid wherever the node is reached; tokens that leave the node's rule after
// consuming some bytes (pop events) depend on the caller and are checked per step from the trie nodes
// listed in `events` (the first byte after the rule ends, then the trie node where that byte starts).
struct NodeMasks {
  std::vector<uint32_t> accepted_bits;   // bitset over the vocabulary (dense case), or
  std::vector<int32_t> accepted_ids;     // the accepted ids (sparse case; dense_bits empty)
  bool dense = false;
  std::vector<int32_t> event_nodes;      // trie nodes, grouped by their byte
  std::vector<uint32_t> event_begin;     // [257]: events of byte c are [event_begin[c], event_begin[c+1])
  size_t bytes() const {
    return accepted_bits.size() * 4 + accepted_ids.size() * 4 + event_nodes.size() * 4 + event_begin.size() * 4;
  }
};

class TokenIndex {
 public:
  // token_bytes[id] for every id of the model's vocabulary; special[id]: matched by name (its
  // token_bytes) only, never as bytes. Empty byte strings are never matched.
  TokenIndex(std::vector<std::string> token_bytes, std::vector<bool> special);

  int vocab_size() const { return vocab_; }
  int words() const { return (vocab_ + 31) / 32; }
  bool is_special(int32_t id) const { return special_[size_t(id)] != 0; }
  const std::string& bytes(int32_t id) const { return bytes_[size_t(id)]; }
  // -1: none. Kimi's tool-call markers fall back to ids 163595-163599 (when special) if no token has
  // their name.
  int32_t special_id(const std::string& name) const;

  // Trie (preorder): node 0 is the root (no byte).
  int trie_size() const { return int(byte_.size()); }
  uint8_t trie_byte(int i) const { return byte_[size_t(i)]; }
  int trie_depth(int i) const { return depth_[size_t(i)]; }
  int trie_end(int i) const { return end_[size_t(i)]; }        // one past the subtree
  int32_t trie_token(int i) const { return token_[size_t(i)]; }  // -1: no token ends here
  int max_depth() const { return max_depth_; }

  // The masks of grammar node n, computed on first use (thread-safe).
  std::shared_ptr<const NodeMasks> node_masks(const Grammar& g, int node) const;
  size_t cache_entries() const;

 private:
  std::shared_ptr<NodeMasks> compute(const Grammar& g, int node) const;

  int vocab_ = 0;
  std::vector<std::string> bytes_;
  std::vector<uint8_t> special_;
  std::unordered_map<std::string, int32_t> special_ids_;
  std::vector<uint8_t> byte_;
  std::vector<uint16_t> depth_;
  std::vector<int32_t> end_, token_;
  int max_depth_ = 0;

  mutable std::mutex mu_;
  mutable std::unordered_map<std::string, std::shared_ptr<const NodeMasks>> cache_;
  mutable size_t cache_bytes_ = 0;
};

}  // namespace ds
