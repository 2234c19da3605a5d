// Prefix caching for the scheduler (docs/PREFIX_CACHE.md): which computed prefixes can be reused, and
// where the KDA state is saved so that they can.
//
// A hit needs both halves of the state after a prefix of p tokens:
//   - MLA latents of [0, p): full blocks are pages shared by content (BlockPool's hash map; the key is
//     a hash chain over the blocks' tokens, and each registered page keeps its block's tokens and its
//     parent's hash, compared on every lookup; a page is registered only once a snapshot at or after
//     it is confirmed finite, so pages of a computation that went NaN are never shared); the partial
//     last block, rows [0, p % block_size), is
//     held by the snapshot entry (a reference on the page it was computed in) and copied into a fresh
//     page of the request that hits (SeqSlice::tail_src_block) — a partial block is never shared;
//   - the KDA state after exactly p tokens: a snapshot (SnapshotPool id) saved by the backend.
// A request resumes at the deepest p where both exist, and always computes at least its last token.
//
// Snapshots are saved (SeqSlice::save_snapshot, or ForwardBatch::saves_before for a finished request)
// at: the end of every prefill chunk that completes a prompt; the end of every finished request; the
// request's checkpoints (a prefill chunk is cut to end there): every `snapshot_interval` tokens, the
// depth of its matched pages when it resumes short of them (the point where two requests diverged),
// and where it diverges from requests still waiting (so that they resume there; they wait for it).
// A saved snapshot becomes usable only after its step reports it finite (StepResult::
// nonfinite_snapshots); a bad one is dropped and counted. Entries are evicted least recently used
// when the pool is full, and entries holding a partial page give it back when the page pool runs out;
// reset() empties the cache on demand.
#pragma once
#include <cstdint>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "cache/block_pool.h"
#include "cache/state_slot_pool.h"
#include "model/forward_batch.h"
#include "sched/request.h"

namespace ds {

struct PrefixCacheConfig {
  bool enabled = false;
  int num_snapshots = 0;           // the snapshot pool (0: no state can be reused: no hits)
  int64_t snapshot_interval = 0;   // tokens between checkpoints inside long prefills (0: none)
};

// Counters (tokens for queries and hits, as vLLM's prefix_cache_queries / prefix_cache_hits).
struct PrefixCacheStats {
  int64_t queries = 0, hits = 0;
  int64_t snapshots_saved = 0, snapshot_evictions = 0, snapshots_nonfinite = 0;
  int snapshots_used = 0, snapshots_capacity = 0;
};

// What PrefixCache::reset() emptied.
struct PrefixCacheCleared {
  int snapshots = 0;  // entries dropped (their snapshot ids freed)
  int pages = 0;      // full pages that were registered for sharing
};

// The deepest exact hit for a request, as lookup() finds it.
struct PrefixHit {
  int64_t tokens = 0;            // resume position (0: nothing to reuse)
  std::vector<int32_t> pages;    // full pages covering [0, tokens - tail_rows)
  int32_t snapshot = -1;
  int32_t tail_page = -1;        // the entry's partial page and its valid rows
  int32_t tail_rows = 0;
  int64_t diverge = 0;           // where r's tokens leave what the cache holds (matched full pages, then
                                 // the longest common start with a cached partial block)
  int64_t pending = 0;           // deepest position a save not yet confirmed will offer
};

class PrefixCache {
 public:
  PrefixCache(const PrefixCacheConfig& cfg, BlockPool& blocks);

  bool enabled() const { return cfg_.enabled && snapshots_.capacity() > 0 && blocks_.paging(); }
  const PrefixCacheStats& stats() const { return stats_; }

  // Start of a plan: entries saved by a plan that never came back (its step failed) are dropped; the
  // entries restored by the last plan may be evicted again.
  void begin_plan();
  // Saves of finished requests' slots, for this plan's ForwardBatch::saves_before.
  std::vector<SlotSave> take_saves_before();
  bool has_saves_before() const { return !saves_before_.empty(); }
  // After the step of the last plan: its saves become usable, or are dropped when not finite.
  void resolve(const std::vector<int32_t>& nonfinite);

  // The deepest hit for r's next admission (counted as a query of r's tokens).
  PrefixHit lookup(Request& r);
  // Takes the hit for r (shares the pages into r.blocks, sets r.num_computed and the restore of its
  // first slice) and plans r's checkpoints, given the requests still waiting behind it.
  void take(const PrefixHit& h, Request& r, const std::vector<const Request*>& waiting);
  // Undoes take() (admission failed for lack of pages).
  void untake(Request& r);
  // Whether r should wait for a deeper hit that a pending save or a running request will offer soon;
  // a running request still prefilling the prefix r shares with it gets a checkpoint there.
  // `running` pairs each running request with the position it is computed to after the step being
  // planned (its chunk in that step, if it has one, is already placed and cannot stop earlier).
  bool should_wait(Request& r, const PrefixHit& h, const std::vector<std::pair<Request*, int64_t>>& running);

  // Cuts a prefill chunk of r starting at r.num_computed to end at its next checkpoint.
  int32_t clip_chunk(const Request& r, int32_t n) const;
  // A snapshot id to save r's state into after a chunk that ends at r.num_computed + n, or -1.
  int32_t save_after_chunk(Request& r, int32_t n, bool decode);
  // After a step advanced r: drops its passed checkpoints.
  void advance(Request& r);
  // r finished (stop or length): its slot's state is saved before the next step.
  void save_finished(Request& r);
  // r's pages and slot are released (finish, preemption).
  void release(Request& r);
  // Gives back entries' partial pages, least recently used first, until `pages` pages are free.
  void reclaim_pages(int pages);
  // Pages only evictable entries hold (their partial pages, which reclaim_pages gives back on demand): free
  // for the usage gauge, as vLLM counts its cached, unreferenced pages.
  int reclaimable_pages() const;
  // Empties the cache (POST /reset_prefix_cache): every entry is dropped (its snapshot id freed, its partial
  // page and its pending pages given back), the saves of finished requests not yet planned are forgotten,
  // and every page registered for sharing is unregistered (BlockPool::clear_hashes: unreferenced ones become
  // plain free pages). The counters stay (totals); nothing is allocated. Nothing on the backend needs undoing:
  // a snapshot id is memory the next save into it overwrites, as after an eviction. Only between a step's
  // update and the next plan, with no request running or waiting (Scheduler::reset_prefix_cache checks): a
  // request may hold a restore of an entry or its shared pages. Afterwards every lookup misses until new
  // saves are confirmed.
  PrefixCacheCleared reset();
  // Tests: every live entry's snapshot id.
  std::vector<int32_t> snapshot_ids() const;

 private:
  // A full page computed on the way to an entry's position: registered under its hash only when the
  // entry's snapshot is confirmed finite (so no page of a computation that produced a NaN is shared).
  struct PendingPage {
    int32_t page = -1;
    uint64_t hash = 0, parent = 0;
    std::vector<int32_t> tokens;
  };
  struct Entry {
    bool live = false, ready = false;
    std::vector<PendingPage> pages;  // held (one reference each) until the entry is resolved
    uint64_t chain = 0;          // hash of the full blocks before pos
    std::vector<int32_t> tail;   // tokens after them (fewer than a block)
    int64_t pos = 0;
    int32_t tail_page = -1;
    uint64_t plan = 0;           // the plan whose step saves it
    uint64_t last_use = 0;
  };

  void hash_blocks(Request& r) const;
  uint64_t chain_at(const Request& r, int64_t full_blocks) const;
  bool tail_matches(const Entry& e, const Request& r, int64_t start) const;
  int find_entry(uint64_t chain, const Request& r, int64_t pos) const;  // snapshot id or -1
  int32_t new_entry(Request& r, int64_t pos);  // pending, holding r's unregistered pages; -1: no room
  void register_pages(Entry& e);
  void drop(int32_t snap);
  int32_t evict_one(bool need_tail_page);
  int64_t lcp(const Request& a, const Request& b) const;

  PrefixCacheConfig cfg_;
  BlockPool& blocks_;
  SnapshotPool snapshots_;
  std::vector<Entry> entries_;                            // by snapshot id
  std::unordered_multimap<uint64_t, int32_t> by_chain_;   // chain hash -> snapshot ids
  std::vector<std::vector<int32_t>> page_tokens_;         // registered page -> its block's tokens
  std::vector<uint64_t> page_parent_;                     // registered page -> the chain hash before it
  std::unordered_set<int32_t> pinned_;                    // restored by the plan being built
  std::vector<SlotSave> saves_before_;
  uint64_t plan_ = 0, clock_ = 0;
  PrefixCacheStats stats_;
};

}  // namespace ds
