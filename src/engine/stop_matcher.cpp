#include "engine/stop_matcher.h"

#include <algorithm>

namespace ds {

StopStringMatcher::StopStringMatcher(std::vector<std::string> stops, bool include_stop)
    : include_stop_(include_stop) {
  for (auto& s : stops)
    if (!s.empty()) stops_.push_back(std::move(s));
}

StopStringMatcher::Result StopStringMatcher::push(std::string_view delta) {
  Result r;
  if (stopped_) return r;
  held_.append(delta);
  if (stops_.empty()) {
    r.text = std::move(held_);
    held_.clear();
    return r;
  }
  // Earliest complete occurrence.
  size_t best = std::string::npos;
  const std::string* hit = nullptr;
  for (const auto& s : stops_) {
    size_t p = held_.find(s);
    if (p == std::string::npos) continue;
    if (p < best || (p == best && s.size() > hit->size())) {
      best = p;
      hit = &s;
    }
  }
  if (hit) {
    stopped_ = true;
    r.stopped = true;
    r.stop = *hit;
    r.text = held_.substr(0, best + (include_stop_ ? hit->size() : 0));
    held_.clear();
    return r;
  }
  // Hold back the longest suffix that is a proper prefix of some stop string.
  size_t keep = 0;
  for (const auto& s : stops_) {
    size_t max_len = std::min(s.size() - 1, held_.size());
    for (size_t len = max_len; len > keep; --len) {
      if (held_.compare(held_.size() - len, len, s, 0, len) == 0) {
        keep = len;
        break;
      }
    }
  }
  r.text = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return r;
}

std::string StopStringMatcher::flush() {
  std::string out = stopped_ ? std::string() : std::move(held_);
  held_.clear();
  return out;
}

}  // namespace ds
