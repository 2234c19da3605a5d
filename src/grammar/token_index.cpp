#include "grammar/token_index.h"

#include <algorithm>
#include <numeric>

#include "core/error.h"
#include "grammar/matcher.h"

namespace ds {
namespace {
constexpr size_t kCacheBytesLimit = size_t(1) << 30;  // dropped wholesale beyond this (many distinct schemas)
}

TokenIndex::TokenIndex(std::vector<std::string> token_bytes, std::vector<bool> special)
    : vocab_(int(token_bytes.size())), bytes_(std::move(token_bytes)) {
  DS_CHECK(special.size() == bytes_.size(), "token index: {} special flags for {} tokens", special.size(), bytes_.size());
  special_.resize(bytes_.size());
  for (size_t i = 0; i < bytes_.size(); ++i) {
    special_[i] = special[i] ? 1 : 0;
    if (special[i] && !bytes_[i].empty()) special_ids_.emplace(bytes_[i], int32_t(i));
  }
  std::vector<int32_t> order;
  for (int32_t i = 0; i < vocab_; ++i)
    if (!special_[size_t(i)] && !bytes_[size_t(i)].empty()) order.push_back(i);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return bytes_[size_t(a)] < bytes_[size_t(b)]; });
  // Preorder trie: the path of trie nodes for the previous token stays open on `path`.
  byte_.push_back(0);
  depth_.push_back(0);
  end_.push_back(0);
  token_.push_back(-1);
  std::vector<int32_t> path{0};
  const std::string* prev = nullptr;
  for (int32_t id : order) {
    const std::string& s = bytes_[size_t(id)];
    DS_CHECK(s.size() < 65535, "token index: token {} is too long", id);
    size_t common = 0;
    if (prev) {
      while (common < prev->size() && common < s.size() && (*prev)[common] == s[common]) ++common;
      DS_CHECK(!(common == s.size() && common == prev->size()), "token index: tokens with equal bytes ({})", id);
    }
    while (path.size() > common + 1) {
      end_[size_t(path.back())] = int32_t(byte_.size());
      path.pop_back();
    }
    for (size_t k = common; k < s.size(); ++k) {
      path.push_back(int32_t(byte_.size()));
      byte_.push_back(uint8_t(s[k]));
      depth_.push_back(uint16_t(k + 1));
      end_.push_back(0);
      token_.push_back(-1);
    }
    token_[size_t(path.back())] = id;
    max_depth_ = std::max(max_depth_, int(s.size()));
    prev = &s;
  }
  while (!path.empty()) {
    end_[size_t(path.back())] = int32_t(byte_.size());
    path.pop_back();
  }
}

int32_t TokenIndex::special_id(const std::string& name) const {
  auto it = special_ids_.find(name);
  if (it != special_ids_.end()) return it->second;
  // Kimi's tool-call markers by id when the tokenizer config does not name them.
  static const std::pair<const char*, int32_t> kKimi[] = {
      {"<|tool_calls_section_begin|>", 163595}, {"<|tool_calls_section_end|>", 163596}, {"<|tool_call_begin|>", 163597},
      {"<|tool_call_argument_begin|>", 163598}, {"<|tool_call_end|>", 163599}};
  for (const auto& [n, id] : kKimi)
    if (name == n && id < vocab_ && special_[size_t(id)]) return id;
  return -1;
}

std::shared_ptr<const NodeMasks> TokenIndex::node_masks(const Grammar& g, int node) const {
  const std::string& key = g.signature(node);
  {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = cache_.find(key);
    if (it != cache_.end()) return it->second;
  }
  std::shared_ptr<const NodeMasks> m = compute_node_masks(g, node, *this);
  std::lock_guard<std::mutex> lk(mu_);
  auto it = cache_.find(key);
  if (it != cache_.end()) return it->second;  // computed meanwhile by another thread
  if (cache_bytes_ + m->bytes() > kCacheBytesLimit) {
    cache_.clear();
    cache_bytes_ = 0;
  }
  cache_.emplace(key, m);
  cache_bytes_ += m->bytes();
  return m;
}

size_t TokenIndex::cache_entries() const {
  std::lock_guard<std::mutex> lk(mu_);
  return cache_.size();
}

}  // namespace ds
