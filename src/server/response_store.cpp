#include "server/response_store.h"

namespace ds::server {

namespace {
// What an entry costs: its JSON text (the parsed form takes a small multiple of it), its id and the
// bookkeeping.
size_t entry_bytes(const std::string& id, const ResponseStore::Entry& e) {
  return e.items.dump().size() + e.response.dump().size() + 2 * id.size() + 128;
}
}  // namespace

bool ResponseStore::put(const std::string& id, Entry e) {
  const size_t b = entry_bytes(id, e);
  std::lock_guard<std::mutex> lk(mu_);
  if (auto it = by_id_.find(id); it != by_id_.end()) drop(it->second);
  if (b > max_bytes_) return false;
  while (bytes_ + b > max_bytes_ && !lru_.empty()) drop(std::prev(lru_.end()));
  lru_.push_front(Node{id, std::make_shared<const Entry>(std::move(e)), b});
  by_id_[id] = lru_.begin();
  bytes_ += b;
  return true;
}

ResponseStore::EntryPtr ResponseStore::get(const std::string& id) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return nullptr;
  lru_.splice(lru_.begin(), lru_, it->second);
  return it->second->entry;
}

bool ResponseStore::erase(const std::string& id) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return false;
  drop(it->second);
  return true;
}

void ResponseStore::drop(std::list<Node>::iterator it) {
  bytes_ -= it->bytes;
  by_id_.erase(it->id);
  lru_.erase(it);
}

size_t ResponseStore::bytes() const {
  std::lock_guard<std::mutex> lk(mu_);
  return bytes_;
}

size_t ResponseStore::size() const {
  std::lock_guard<std::mutex> lk(mu_);
  return lru_.size();
}

}  // namespace ds::server
