// A pushdown matcher over a Grammar's rule automata (grammar/pda.h), bound to a vocabulary: the state
// is the set of configurations (node, call stack) that can scan the next byte or special token, plus
// whether the grammar may end here. A token mask is the union of each configuration's cached
// rule-local mask (TokenIndex::node_masks) and of the tokens that leave a rule part-way, checked
// against the caller's continuation over the trie (few: the bytes after a rule's end must fit it).
#pragma once
#include <cstdint>
#include <memory>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "grammar/grammar.h"
#include "grammar/pda.h"
#include "grammar/token_index.h"

namespace ds {

class GrammarMatcher {
 public:
  GrammarMatcher(std::shared_ptr<const Grammar> g, std::shared_ptr<const TokenIndex> vocab);

  // Consumes one token; false (state unchanged) when the grammar does not allow it.
  bool accept_token(int32_t id);
  bool accept_bytes(std::string_view bytes);  // the same for raw bytes (tests)
  // Writes the allowed-next bitset (TokenIndex::words() words; bit t % 32 of word t / 32). End-of-
  // sequence tokens are the caller's business (allowed iff can_end()).
  void fill_mask(uint32_t* bits);
  bool can_end() const { return ends_; }                               // a complete document so far
  bool terminated() const { return ends_ && configs_.empty(); }       // ... and nothing may follow
  const Grammar& grammar() const { return *g_; }
  const TokenIndex& vocab() const { return *vocab_; }

 private:
  const NodeMasks& masks(int node);
  bool advance(std::vector<PdaConfig>& next, bool* ends, int32_t id);
  void check_subtree(int trie_node, const std::vector<PdaConfig>& start, bool start_ends, uint32_t* bits);

  std::shared_ptr<const Grammar> g_;
  std::shared_ptr<const TokenIndex> vocab_;
  Pda pda_;
  std::unordered_map<int32_t, int> special_index_;  // token id → grammar special index
  std::vector<std::shared_ptr<const NodeMasks>> masks_;  // per node, fetched on first use
  std::vector<PdaConfig> configs_;
  bool ends_ = false;
  // Scratch.
  std::vector<PdaConfig> tmp_, parent_;
  std::vector<std::vector<PdaConfig>> depth_;
  std::vector<uint8_t> depth_ends_;
};

// The rule-local masks of one node (what TokenIndex::node_masks caches).
std::shared_ptr<NodeMasks> compute_node_masks(const Grammar& g, int node, const TokenIndex& vocab);

}  // namespace ds
