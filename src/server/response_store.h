// The responses that /v1/responses keeps for `previous_response_id`, GET and DELETE
// /v1/responses/{id} (OpenAI's `store`, on unless a request says false): in host memory, bounded by a
// byte budget set at start-up (--responses-store-mib; 0 keeps none), the least recently used dropped
// first; gone with the process. Thread-safe.
#pragma once
#include <nlohmann/json.hpp>

#include <cstddef>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

namespace ds::server {

class ResponseStore {
 public:
  struct Entry {
    nlohmann::json items;     // the conversation so far as Responses input items: earlier turns, this input, this output
    nlohmann::json response;  // the response object as answered
  };
  using EntryPtr = std::shared_ptr<const Entry>;  // shared, not copied: an entry outlives its eviction while read

  explicit ResponseStore(size_t max_bytes) : max_bytes_(max_bytes) {}
  bool enabled() const { return max_bytes_ > 0; }
  // Keeps `e` under `id` (replacing one there), dropping the least recently used beyond the budget; an entry
  // larger than the whole budget is not kept (false).
  bool put(const std::string& id, Entry e);
  // The entry, now the most recently used; null when unknown or dropped.
  EntryPtr get(const std::string& id);
  bool erase(const std::string& id);
  size_t bytes() const;
  size_t size() const;

 private:
  struct Node {
    std::string id;
    EntryPtr entry;
    size_t bytes = 0;
  };
  void drop(std::list<Node>::iterator it);  // (mu_ held)

  const size_t max_bytes_;
  mutable std::mutex mu_;
  std::list<Node> lru_;  // most recently used first
  std::unordered_map<std::string, std::list<Node>::iterator> by_id_;
  size_t bytes_ = 0;
};

}  // namespace ds::server
