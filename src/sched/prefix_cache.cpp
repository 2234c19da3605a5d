#include "sched/prefix_cache.h"

#include <algorithm>

#include "core/error.h"
#include "core/splitmix.h"

namespace ds {
namespace {

constexpr uint64_t kSeed = 0x6a09e667f3bcc908ull;  // the chain hash of zero blocks
constexpr size_t kMaxSiblings = 64;                // waiting requests compared at an admission
constexpr size_t kMaxCheckpoints = 64;             // per request

}  // namespace

PrefixCache::PrefixCache(const PrefixCacheConfig& cfg, BlockPool& blocks)
    : cfg_(cfg), blocks_(blocks), snapshots_(cfg.enabled ? cfg.num_snapshots : 0) {
  DS_CHECK(cfg.num_snapshots >= 0, "prefix cache: {} snapshots", cfg.num_snapshots);
  DS_CHECK(cfg.snapshot_interval >= 0, "prefix cache: snapshot interval {} < 0", cfg.snapshot_interval);
  entries_.resize(size_t(snapshots_.capacity()));
  page_tokens_.resize(size_t(blocks.num_blocks()));
  page_parent_.assign(size_t(blocks.num_blocks()), 0);
  stats_.snapshots_capacity = snapshots_.capacity();
  if (blocks.paging() && cfg_.snapshot_interval > 0) {  // checkpoints on block boundaries
    const int bs = blocks.block_size();
    cfg_.snapshot_interval = (cfg_.snapshot_interval + bs - 1) / bs * bs;
  }
}

void PrefixCache::hash_blocks(Request& r) const {
  const int bs = blocks_.block_size();
  const int64_t full = r.num_tokens() / bs;
  for (int64_t i = int64_t(r.block_hashes.size()); i < full; ++i) {
    uint64_t h = splitmix64(i == 0 ? kSeed : r.block_hashes[size_t(i - 1)]);
    for (int64_t p = i * bs; p < (i + 1) * bs; ++p) h = splitmix64(h ^ uint64_t(uint32_t(r.token_at(p))));
    r.block_hashes.push_back(h);
  }
}

uint64_t PrefixCache::chain_at(const Request& r, int64_t full_blocks) const {
  return full_blocks == 0 ? kSeed : r.block_hashes[size_t(full_blocks - 1)];
}

bool PrefixCache::tail_matches(const Entry& e, const Request& r, int64_t start) const {
  if (start + int64_t(e.tail.size()) > r.num_tokens()) return false;
  for (size_t i = 0; i < e.tail.size(); ++i)
    if (e.tail[i] != r.token_at(start + int64_t(i))) return false;
  return true;
}

int PrefixCache::find_entry(uint64_t chain, const Request& r, int64_t pos) const {
  const int bs = blocks_.block_size();
  auto [lo, hi] = by_chain_.equal_range(chain);
  for (auto it = lo; it != hi; ++it) {
    const Entry& e = entries_[size_t(it->second)];
    if (e.pos == pos && tail_matches(e, r, pos / bs * bs)) return it->second;
  }
  return -1;
}

void PrefixCache::begin_plan() {
  ++plan_;
  pinned_.clear();
  for (size_t s = 0; s < entries_.size(); ++s)
    if (entries_[s].live && !entries_[s].ready && entries_[s].plan < plan_) drop(int32_t(s));  // step failed
}

std::vector<SlotSave> PrefixCache::take_saves_before() {
  std::vector<SlotSave> out;
  out.swap(saves_before_);
  return out;
}

void PrefixCache::resolve(const std::vector<int32_t>& nonfinite) {
  const std::unordered_set<int32_t> bad(nonfinite.begin(), nonfinite.end());
  for (size_t s = 0; s < entries_.size(); ++s) {
    Entry& e = entries_[s];
    if (!e.live || e.ready || e.plan != plan_) continue;
    if (bad.count(int32_t(s))) {
      drop(int32_t(s));
      ++stats_.snapshots_nonfinite;
    } else {
      e.ready = true;
      register_pages(e);
      ++stats_.snapshots_saved;
    }
  }
}

PrefixHit PrefixCache::lookup(Request& r) {
  PrefixHit h;
  if (!enabled()) return h;
  hash_blocks(r);
  const int bs = blocks_.block_size();
  const int64_t limit = r.num_tokens() - 1;  // the last token is always computed (its logits)
  std::vector<int32_t> pages;
  int64_t k = 0;
  while ((k + 1) * bs <= limit && k < int64_t(r.block_hashes.size())) {
    const int32_t page = blocks_.lookup(r.block_hashes[size_t(k)]);
    if (page < 0 || page_parent_[size_t(page)] != chain_at(r, k)) break;
    const auto& toks = page_tokens_[size_t(page)];
    bool same = int64_t(toks.size()) == bs;
    for (int64_t i = 0; same && i < bs; ++i) same = toks[size_t(i)] == r.token_at(k * bs + i);
    if (!same) break;
    pages.push_back(page);
    ++k;
  }
  h.diverge = k * bs;
  // Where entry e, chained after block j, would resume r: its position when r follows it there, else -1.
  auto match_pos = [&](const Entry& e, int64_t j) -> int64_t {
    const int64_t pos = j * bs + int64_t(e.tail.size());
    return e.pos == pos && pos <= limit && tail_matches(e, r, j * bs) ? pos : -1;
  };
  for (int64_t j = k; j >= 0 && h.tokens == 0; --j) {
    auto [lo, hi] = by_chain_.equal_range(chain_at(r, j));
    for (auto it = lo; it != hi; ++it) {
      const Entry& e = entries_[size_t(it->second)];
      if (j == k) {  // how far r follows this cached partial block
        int64_t m = 0;
        while (m < int64_t(e.tail.size()) && k * bs + m < limit && e.tail[size_t(m)] == r.token_at(k * bs + m)) ++m;
        h.diverge = std::max(h.diverge, k * bs + m);
      }
      if (!e.tail.empty() && e.tail_page < 0) continue;
      const int64_t pos = match_pos(e, j);
      if (pos < 1) continue;
      if (!e.ready) {
        h.pending = std::max(h.pending, pos);
      } else if (pos > h.tokens) {
        h.tokens = pos;
        h.snapshot = it->second;
        h.tail_page = e.tail.empty() ? -1 : e.tail_page;
        h.tail_rows = int32_t(e.tail.size());
      }
    }
    if (h.tokens > 0) h.pages.assign(pages.begin(), pages.begin() + j);
  }
  // A save not yet confirmed can lie past the registered pages (the pages on the way to it are registered
  // when it is confirmed: a finished request's state, saved by the next plan). Report it, so that r waits a
  // step for it (should_wait) rather than resuming shallower for good: the next turn of a conversation,
  // sent the moment the previous answer ends, would otherwise miss the answer's state.
  for (int64_t j = k + 1; j <= int64_t(r.block_hashes.size()) && j * bs <= limit; ++j) {
    auto [lo, hi] = by_chain_.equal_range(chain_at(r, j));
    for (auto it = lo; it != hi; ++it) {
      const Entry& e = entries_[size_t(it->second)];
      if (!e.ready) h.pending = std::max(h.pending, match_pos(e, j));
    }
  }
  return h;
}

int64_t PrefixCache::lcp(const Request& a, const Request& b) const {
  const size_t m = std::min(a.block_hashes.size(), b.block_hashes.size());
  size_t i = 0;
  while (i < m && a.block_hashes[i] == b.block_hashes[i]) ++i;
  int64_t pos = int64_t(i) * blocks_.block_size();
  const int64_t end = std::min(a.num_tokens(), b.num_tokens());
  while (pos < end && a.token_at(pos) == b.token_at(pos)) ++pos;
  return pos;
}

void PrefixCache::take(const PrefixHit& h, Request& r, const std::vector<const Request*>& waiting) {
  r.num_cached_tokens = h.tokens;
  r.checkpoints.clear();
  if (!enabled()) return;
  stats_.queries += r.num_tokens();
  stats_.hits += h.tokens;
  if (h.tokens > 0) {
    for (int32_t p : h.pages) {
      blocks_.share(p);
      r.blocks.push_back(p);
    }
    r.num_registered = int(h.pages.size());
    r.num_computed = h.tokens;
    r.restore_snapshot = h.snapshot;
    r.tail_src_block = h.tail_page;
    r.tail_rows = h.tail_rows;
    entries_[size_t(h.snapshot)].last_use = ++clock_;
    pinned_.insert(h.snapshot);
  }
  const int64_t n = r.num_tokens(), bs = blocks_.block_size();
  std::vector<int64_t> cps;
  if (cfg_.snapshot_interval > 0)
    for (int64_t q = (h.tokens / cfg_.snapshot_interval + 1) * cfg_.snapshot_interval; q < n; q += cfg_.snapshot_interval)
      cps.push_back(q);
  if (h.diverge > h.tokens && h.diverge < n) cps.push_back(h.diverge);  // where cached requests and r diverge
  for (size_t i = 0; i < waiting.size() && i < kMaxSiblings; ++i) {
    const int64_t c = std::min(lcp(r, *waiting[i]), waiting[i]->num_tokens() - 1);
    if (c >= h.tokens + bs && c < n) cps.push_back(c);  // where r and a waiting request diverge
  }
  std::sort(cps.begin(), cps.end());
  int64_t last = h.tokens;
  for (int64_t q : cps)
    if (q - last >= bs) r.checkpoints.push_back(last = q);  // the first of close ones serves them all
}

void PrefixCache::untake(Request& r) {
  if (enabled()) {
    stats_.queries -= r.num_tokens();
    stats_.hits -= r.num_cached_tokens;
  }
  blocks_.free(&r.blocks);
  release(r);
  r.num_computed = 0;
  r.num_cached_tokens = 0;
}

bool PrefixCache::should_wait(Request& r, const PrefixHit& h,
                              const std::vector<std::pair<Request*, int64_t>>& running) {
  if (!enabled()) return false;
  if (h.pending > h.tokens) return true;  // confirmed after this step
  const int64_t bs = blocks_.block_size();
  for (const auto& [a, planned] : running) {
    // (both were looked up, so both are hashed: most pairs differ in their first block)
    if (a->block_hashes.empty() || r.block_hashes.empty() || a->block_hashes[0] != r.block_hashes[0]) continue;
    const int64_t c = std::min(lcp(*a, r), r.num_tokens() - 1);
    if (c < h.tokens + bs || c <= a->num_computed) continue;
    // a stops and saves at c, unless its chunk of this step already runs to c or past it (too late). This
    // comes before the look at a's checkpoints ahead: r waiting for an earlier one (an interval checkpoint)
    // would otherwise look again there, and by then a's chunk may run past c, so r would resume short of it.
    auto at = std::lower_bound(a->checkpoints.begin(), a->checkpoints.end(), c);
    if (c > planned && c < a->num_tokens() && (at == a->checkpoints.end() || *at != c) &&
        a->checkpoints.size() < kMaxCheckpoints)
      a->checkpoints.insert(at, c);
    for (int64_t q : a->checkpoints)
      if (q > a->num_computed && q >= h.tokens + bs && q <= c) return true;
  }
  return false;
}

int32_t PrefixCache::clip_chunk(const Request& r, int32_t n) const {
  for (int64_t q : r.checkpoints)
    if (q > r.num_computed) return int32_t(std::min<int64_t>(n, q - r.num_computed));
  return n;
}

int32_t PrefixCache::save_after_chunk(Request& r, int32_t n, bool decode) {
  if (!enabled()) return -1;
  const int64_t end = r.num_computed + n;
  bool save = !decode && end == r.num_tokens();  // the end of a prompt (or of a resumed prefill)
  for (int64_t q : r.checkpoints)
    if (q > r.num_computed) {
      save |= q == end;
      break;
    }
  if (!save) return -1;
  const int32_t snap = new_entry(r, end);
  if (snap >= 0) entries_[size_t(snap)].plan = plan_;
  return snap;
}

int32_t PrefixCache::new_entry(Request& r, int64_t pos) {
  hash_blocks(r);
  const int bs = blocks_.block_size();
  const int64_t j = pos / bs, t = pos % bs;
  const uint64_t chain = chain_at(r, j);
  const int found = find_entry(chain, r, pos);
  if (found >= 0) {  // already cached (or being saved)
    entries_[size_t(found)].last_use = ++clock_;
    return -1;
  }
  int32_t snap = snapshots_.allocate();
  if (snap < 0 && evict_one(false) >= 0) snap = snapshots_.allocate();
  if (snap < 0) return -1;
  Entry& e = entries_[size_t(snap)];
  e = Entry{};
  e.live = true;
  e.chain = chain;
  e.pos = pos;
  for (int64_t p = j * bs; p < pos; ++p) e.tail.push_back(r.token_at(p));
  if (t > 0) {
    e.tail_page = r.blocks[size_t(j)];
    blocks_.share(e.tail_page);
  }
  for (int64_t i = r.num_registered; i < j && i < int64_t(r.blocks.size()); ++i) {
    PendingPage p;
    p.page = r.blocks[size_t(i)];
    p.hash = r.block_hashes[size_t(i)];
    p.parent = chain_at(r, i);
    for (int64_t q = i * bs; q < (i + 1) * bs; ++q) p.tokens.push_back(r.token_at(q));
    blocks_.share(p.page);
    e.pages.push_back(std::move(p));
  }
  r.num_registered = int(std::max<int64_t>(r.num_registered, j));
  e.last_use = ++clock_;
  by_chain_.emplace(chain, snap);
  stats_.snapshots_used = snapshots_.num_used();
  return snap;
}

void PrefixCache::drop(int32_t snap) {
  Entry& e = entries_[size_t(snap)];
  auto [lo, hi] = by_chain_.equal_range(e.chain);
  for (auto it = lo; it != hi; ++it)
    if (it->second == snap) {
      by_chain_.erase(it);
      break;
    }
  if (e.tail_page >= 0) blocks_.decref(e.tail_page);
  for (const PendingPage& p : e.pages) blocks_.decref(p.page);
  e = Entry{};
  snapshots_.free(snap);
  stats_.snapshots_used = snapshots_.num_used();
}

int32_t PrefixCache::evict_one(bool need_tail_page) {
  int32_t best = -1;
  for (size_t s = 0; s < entries_.size(); ++s) {
    const Entry& e = entries_[s];
    if (!e.live || !e.ready || pinned_.count(int32_t(s)) || (need_tail_page && e.tail_page < 0)) continue;
    if (best < 0 || e.last_use < entries_[size_t(best)].last_use) best = int32_t(s);
  }
  if (best >= 0) {
    drop(best);
    ++stats_.snapshot_evictions;
  }
  return best;
}

void PrefixCache::register_pages(Entry& e) {
  for (PendingPage& p : e.pages) {
    if (blocks_.register_hash(p.page, p.hash)) {  // false: another page already holds these contents
      page_tokens_[size_t(p.page)] = std::move(p.tokens);
      page_parent_[size_t(p.page)] = p.parent;
    }
    blocks_.decref(p.page);
  }
  e.pages.clear();
}

void PrefixCache::advance(Request& r) {
  while (!r.checkpoints.empty() && r.checkpoints.front() <= r.num_computed) r.checkpoints.erase(r.checkpoints.begin());
}

void PrefixCache::save_finished(Request& r) {
  if (!enabled() || r.state_slot < 0 || r.num_computed <= 0) return;
  const int32_t snap = new_entry(r, r.num_computed);
  if (snap < 0) return;
  entries_[size_t(snap)].plan = plan_ + 1;  // saved by the next plan, before anything else
  saves_before_.push_back({r.state_slot, snap});
}

void PrefixCache::release(Request& r) {
  r.num_registered = 0;
  r.checkpoints.clear();
  r.restore_snapshot = -1;
  r.tail_src_block = -1;
  r.tail_rows = 0;
}

void PrefixCache::reclaim_pages(int pages) {
  while (blocks_.num_free() < pages && evict_one(true) >= 0) {
  }
}

int PrefixCache::reclaimable_pages() const {
  // A page is reclaimable when every reference to it is an evictable entry's (what evict_one may drop).
  std::vector<int32_t> held;
  for (size_t s = 0; s < entries_.size(); ++s) {
    const Entry& e = entries_[s];
    if (e.live && e.ready && e.tail_page >= 0 && !pinned_.count(int32_t(s))) held.push_back(e.tail_page);
  }
  std::sort(held.begin(), held.end());
  int n = 0;
  for (size_t i = 0, j = 0; i < held.size(); i = j) {
    while (j < held.size() && held[j] == held[i]) ++j;
    n += blocks_.refcount(held[i]) == int(j - i);
  }
  return n;
}

PrefixCacheCleared PrefixCache::reset() {
  PrefixCacheCleared out;
  for (size_t s = entries_.size(); s-- > 0;)  // highest first: the pool hands out the lowest ids first again
    if (entries_[s].live) {
      drop(int32_t(s));
      ++out.snapshots;
    }
  DS_CHECK(by_chain_.empty() && snapshots_.num_used() == 0, "prefix cache reset: {} entries left",
           snapshots_.num_used());
  saves_before_.clear();  // their entries were dropped; the slots were released with their requests
  pinned_.clear();
  for (auto& t : page_tokens_) t.clear();
  std::fill(page_parent_.begin(), page_parent_.end(), 0);
  out.pages = blocks_.clear_hashes();
  stats_.snapshots_used = 0;
  return out;
}

std::vector<int32_t> PrefixCache::snapshot_ids() const {
  std::vector<int32_t> out;
  for (size_t s = 0; s < entries_.size(); ++s)
    if (entries_[s].live) out.push_back(int32_t(s));
  return out;
}

}  // namespace ds
