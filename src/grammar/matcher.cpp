#include "grammar/matcher.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"

namespace ds {

std::shared_ptr<NodeMasks> compute_node_masks(const Grammar& g, int node, const TokenIndex& vocab) {
  auto m = std::make_shared<NodeMasks>();
  std::vector<uint32_t> bits(size_t(vocab.words()), 0u);
  auto set = [&](int32_t t) { bits[size_t(t) >> 5] |= 1u << (t & 31); };
  for (const Grammar::Edge* e = g.edges_begin(node); e != g.edges_end(node); ++e)
    if (e->kind == Grammar::EdgeKind::Special) {
      const int32_t id = vocab.special_id(g.specials()[size_t(e->arg)]);
      if (id >= 0) set(id);
    }
  std::vector<std::pair<uint8_t, int32_t>> events;
  if (g.node(node).first.any()) {
    Pda pda(g);
    std::vector<std::vector<PdaConfig>> st(size_t(vocab.max_depth() + 1));
    st[0] = {{node, -1}};
    const int n = vocab.trie_size();
    for (int i = 1; i < n;) {
      const int d = vocab.trie_depth(i);
      bool ends = false;
      pda.step_byte(st[size_t(d - 1)], vocab.trie_byte(i), st[size_t(d)], &ends);
      const int32_t tok = vocab.trie_token(i);
      if (tok >= 0 && (ends || !st[size_t(d)].empty())) set(tok);
      if (ends)  // the rule ended after these bytes: longer tokens depend on the caller
        for (int j = i + 1; j < vocab.trie_end(i); j = vocab.trie_end(j)) events.emplace_back(vocab.trie_byte(j), j);
      i = st[size_t(d)].empty() ? vocab.trie_end(i) : i + 1;
    }
  }
  int count = 0;
  for (uint32_t w : bits) count += __builtin_popcount(w);
  m->dense = count > vocab.vocab_size() / 64;
  if (m->dense) {
    m->accepted_bits = std::move(bits);
  } else {
    for (int32_t t = 0; t < vocab.vocab_size(); ++t)
      if ((bits[size_t(t) >> 5] >> (t & 31)) & 1u) m->accepted_ids.push_back(t);
  }
  std::stable_sort(events.begin(), events.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  m->event_begin.assign(257, 0);
  for (const auto& [c, j] : events) {
    m->event_nodes.push_back(j);
    ++m->event_begin[size_t(c) + 1];
  }
  for (int c = 0; c < 256; ++c) m->event_begin[size_t(c) + 1] += m->event_begin[size_t(c)];
  return m;
}

GrammarMatcher::GrammarMatcher(std::shared_ptr<const Grammar> g, std::shared_ptr<const TokenIndex> vocab)
    : g_(std::move(g)), vocab_(std::move(vocab)), pda_(*g_) {
  DS_CHECK(g_ && vocab_, "grammar matcher: no grammar or vocabulary");
  for (size_t k = 0; k < g_->specials().size(); ++k) {
    const int32_t id = vocab_->special_id(g_->specials()[k]);
    if (id >= 0) special_index_[id] = int(k);
  }
  masks_.resize(size_t(g_->num_nodes()));
  depth_.resize(size_t(vocab_->max_depth() + 2));
  depth_ends_.resize(depth_.size());
  std::vector<PdaConfig> work{{g_->rule_start(g_->root()), -1}};
  pda_.closure(work, configs_, &ends_);
}

const NodeMasks& GrammarMatcher::masks(int node) {
  auto& m = masks_[size_t(node)];
  if (!m) m = vocab_->node_masks(*g_, node);
  return *m;
}

bool GrammarMatcher::advance(std::vector<PdaConfig>& next, bool* ends, int32_t id) {
  if (id < 0 || id >= vocab_->vocab_size()) return false;
  if (vocab_->is_special(id)) {
    auto it = special_index_.find(id);
    if (it == special_index_.end()) return false;
    pda_.step_special(configs_, it->second, next, ends);
    return *ends || !next.empty();
  }
  const std::string& s = vocab_->bytes(id);
  if (s.empty()) return false;
  std::vector<PdaConfig> cur = configs_;
  for (unsigned char c : s) {
    if (cur.empty()) return false;
    pda_.step_byte(cur, c, next, ends);
    cur.swap(next);
  }
  next.swap(cur);
  return *ends || !next.empty();
}

bool GrammarMatcher::accept_token(int32_t id) {
  std::vector<PdaConfig> next;
  bool ends = false;
  if (!advance(next, &ends, id)) return false;
  configs_.swap(next);
  ends_ = ends;
  return true;
}

bool GrammarMatcher::accept_bytes(std::string_view bytes) {
  std::vector<PdaConfig> cur = configs_, next;
  bool ends = ends_;
  for (unsigned char c : bytes) {
    if (cur.empty()) return false;
    pda_.step_byte(cur, c, next, &ends);
    cur.swap(next);
  }
  if (cur.empty() && !ends) return false;
  configs_.swap(cur);
  ends_ = ends;
  return true;
}

void GrammarMatcher::check_subtree(int j, const std::vector<PdaConfig>& start, bool start_ends, uint32_t* bits) {
  const TokenIndex& v = *vocab_;
  auto set = [&](int32_t t) { bits[size_t(t) >> 5] |= 1u << (t & 31); };
  if (v.trie_token(j) >= 0 && (start_ends || !start.empty())) set(v.trie_token(j));
  if (start.empty()) return;
  const int d0 = v.trie_depth(j);
  depth_[0] = start;
  for (int i = j + 1; i < v.trie_end(j);) {
    const int d = v.trie_depth(i) - d0;
    bool ends = false;
    pda_.step_byte(depth_[size_t(d - 1)], v.trie_byte(i), depth_[size_t(d)], &ends);
    if (v.trie_token(i) >= 0 && (ends || !depth_[size_t(d)].empty())) set(v.trie_token(i));
    i = depth_[size_t(d)].empty() ? v.trie_end(i) : i + 1;
  }
}

void GrammarMatcher::fill_mask(uint32_t* bits) {
  const int words = vocab_->words();
  std::memset(bits, 0, size_t(words) * sizeof(uint32_t));
  const size_t mark = pda_.mark();
  // Rule-local masks, once per node.
  tmp_.clear();
  for (const PdaConfig& c : configs_) {
    bool dup = false;
    for (const PdaConfig& o : tmp_) dup |= o.node == c.node;
    if (dup) continue;
    tmp_.push_back(c);
    const NodeMasks& m = masks(c.node);
    if (m.dense) {
      const uint32_t* a = m.accepted_bits.data();
      for (int w = 0; w < words; ++w) bits[w] |= a[w];
    } else {
      for (int32_t t : m.accepted_ids) bits[size_t(t) >> 5] |= 1u << (t & 31);
    }
  }
  // Tokens that leave a rule part-way: the rest of their bytes against the caller's continuation.
  std::vector<PdaConfig> after;
  for (const PdaConfig& c : configs_) {
    const NodeMasks& m = masks(c.node);
    if (c.stack < 0 || m.event_nodes.empty()) continue;
    bool pend = false;
    pda_.pop(c.stack, parent_, &pend);
    if (parent_.empty()) continue;
    ByteSet first;
    for (const PdaConfig& p : parent_) first |= g_->node(p.node).first;
    for (int b = 0; b < 256; ++b) {
      if (m.event_begin[size_t(b)] == m.event_begin[size_t(b) + 1] || !first.test(size_t(b))) continue;
      bool e = false;
      pda_.step_byte(parent_, uint8_t(b), after, &e);
      if (after.empty() && !e) continue;
      for (uint32_t k = m.event_begin[size_t(b)]; k < m.event_begin[size_t(b) + 1]; ++k)
        check_subtree(m.event_nodes[k], after, e, bits);
    }
  }
  pda_.truncate(mark);
}

}  // namespace ds
