#include "grammar/pda.h"

#include <algorithm>

namespace ds {

int32_t Pda::push(int32_t ret, int32_t parent) {
  // A return to a final node without edges does nothing: tail call (keeps right recursion flat).
  const Grammar::Node& n = g_.node(ret);
  if (n.final && n.edge_begin == n.edge_end) return parent;
  const uint64_t k = key(ret, parent);
  auto it = ids_.find(k);
  if (it != ids_.end()) return it->second;
  const int32_t id = int32_t(frames_.size());
  frames_.push_back({ret, parent});
  ids_.emplace(k, id);
  return id;
}

void Pda::truncate(size_t mark) {
  while (frames_.size() > mark) {
    ids_.erase(key(frames_.back().ret, frames_.back().parent));
    frames_.pop_back();
  }
}

void Pda::closure(std::vector<PdaConfig>& work, std::vector<PdaConfig>& out, bool* ends) {
  seen_.clear();
  while (!work.empty()) {
    const PdaConfig c = work.back();
    work.pop_back();
    if (std::find(seen_.begin(), seen_.end(), c) != seen_.end()) continue;
    seen_.push_back(c);
    const Grammar::Node& n = g_.node(c.node);
    if (n.scans && std::find(out.begin(), out.end(), c) == out.end()) out.push_back(c);
    if (n.final) {
      if (c.stack < 0) *ends = true;
      else work.push_back({frames_[size_t(c.stack)].ret, frames_[size_t(c.stack)].parent});
    }
    for (const Grammar::Edge* e = g_.edges_begin(c.node); e != g_.edges_end(c.node); ++e)
      if (e->kind == Grammar::EdgeKind::Ref) work.push_back({g_.rule_start(e->arg), push(e->target, c.stack)});
  }
}

void Pda::step_byte(const std::vector<PdaConfig>& in, uint8_t c, std::vector<PdaConfig>& out, bool* ends) {
  out.clear();
  *ends = false;
  work_.clear();
  for (const PdaConfig& k : in) {
    if (!g_.node(k.node).first.test(c)) continue;
    for (const Grammar::Edge* e = g_.edges_begin(k.node); e != g_.edges_end(k.node); ++e)
      if (e->kind == Grammar::EdgeKind::Bytes && g_.byte_set(e->arg).test(c)) work_.push_back({e->target, k.stack});
  }
  if (!work_.empty()) closure(work_, out, ends);
}

void Pda::step_special(const std::vector<PdaConfig>& in, int special, std::vector<PdaConfig>& out, bool* ends) {
  out.clear();
  *ends = false;
  work_.clear();
  for (const PdaConfig& k : in)
    for (const Grammar::Edge* e = g_.edges_begin(k.node); e != g_.edges_end(k.node); ++e)
      if (e->kind == Grammar::EdgeKind::Special && e->arg == special) work_.push_back({e->target, k.stack});
  if (!work_.empty()) closure(work_, out, ends);
}

void Pda::pop(int32_t s, std::vector<PdaConfig>& out, bool* ends) {
  out.clear();
  *ends = false;
  work_.clear();
  work_.push_back({frames_[size_t(s)].ret, frames_[size_t(s)].parent});
  closure(work_, out, ends);
}

}  // namespace ds
