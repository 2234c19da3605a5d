#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "cache/block_pool.h"
#include "cache/state_slot_pool.h"
#include "core/error.h"

using namespace ds;

TEST(BlockPool, AllocateFreeAndUsage) {
  BlockPool pool(8, 16);
  EXPECT_EQ(pool.num_free(), 8);
  EXPECT_EQ(pool.capacity_tokens(), 128);
  EXPECT_EQ(pool.blocks_for(0), 0);
  EXPECT_EQ(pool.blocks_for(1), 1);
  EXPECT_EQ(pool.blocks_for(16), 1);
  EXPECT_EQ(pool.blocks_for(17), 2);
  std::vector<int32_t> a, b;
  ASSERT_TRUE(pool.allocate(3, &a));
  ASSERT_TRUE(pool.allocate(5, &b));
  EXPECT_EQ(pool.num_free(), 0);
  EXPECT_DOUBLE_EQ(pool.usage(), 1.0);
  std::vector<int32_t> all = a;
  all.insert(all.end(), b.begin(), b.end());
  std::sort(all.begin(), all.end());
  EXPECT_EQ(std::unique(all.begin(), all.end()), all.end()) << "a page was handed out twice";
  std::vector<int32_t> c;
  EXPECT_FALSE(pool.allocate(1, &c));
  EXPECT_TRUE(c.empty()) << "a failed allocation must take nothing";
  pool.free(&a);
  EXPECT_TRUE(a.empty());
  EXPECT_EQ(pool.num_free(), 3);
  EXPECT_DOUBLE_EQ(pool.usage(), 5.0 / 8.0);
  EXPECT_FALSE(pool.allocate(4, &c));
  EXPECT_EQ(pool.num_free(), 3);
  ASSERT_TRUE(pool.allocate(3, &c));
  EXPECT_EQ(pool.num_free(), 0);
}

TEST(BlockPool, DoubleFreeAndForeignPagesAreErrors) {
  BlockPool pool(4, 16);
  std::vector<int32_t> a;
  ASSERT_TRUE(pool.allocate(2, &a));
  std::vector<int32_t> copy = a;
  pool.free(&a);
  EXPECT_THROW(pool.free(&copy), Error);
  std::vector<int32_t> bad{7};
  EXPECT_THROW(pool.free(&bad), Error);
}

TEST(BlockPool, PagingDisabled) {
  BlockPool pool(0, 0);
  EXPECT_FALSE(pool.paging());
  EXPECT_EQ(pool.blocks_for(1000), 0);
  std::vector<int32_t> a;
  EXPECT_TRUE(pool.allocate(0, &a));
  EXPECT_DOUBLE_EQ(pool.usage(), 0.0);
}

TEST(StateSlotPool, AllocateUntilEmptyThenReuse) {
  StateSlotPool pool(3);
  int32_t a = pool.allocate(), b = pool.allocate(), c = pool.allocate();
  EXPECT_EQ(pool.allocate(), -1);
  EXPECT_NE(a, b);
  EXPECT_NE(b, c);
  EXPECT_NE(a, c);
  EXPECT_DOUBLE_EQ(pool.usage(), 1.0);
  pool.free(b);
  EXPECT_EQ(pool.num_free(), 1);
  EXPECT_EQ(pool.allocate(), b);
  EXPECT_THROW(pool.free(5), Error);
  pool.free(a);
  EXPECT_THROW(pool.free(a), Error);
}

TEST(SnapshotPool, BudgetOfIds) {
  SnapshotPool none(0);
  EXPECT_EQ(none.allocate(), -1) << "no snapshots by default";
  SnapshotPool pool(2);
  EXPECT_EQ(pool.num_snapshots(), 2);
  const int32_t a = pool.allocate(), b = pool.allocate();
  EXPECT_NE(a, b);
  EXPECT_TRUE(pool.in_use(a));
  EXPECT_EQ(pool.allocate(), -1);
  pool.free(a);
  EXPECT_FALSE(pool.in_use(a));
  EXPECT_THROW(pool.free(a), Error);
  EXPECT_EQ(pool.allocate(), a);
}

TEST(BlockPool, SharedPagesReturnAtRefcountZero) {
  BlockPool pool(4, 16);
  std::vector<int32_t> a;
  ASSERT_TRUE(pool.allocate(2, &a));
  EXPECT_EQ(pool.refcount(a[0]), 1);
  pool.share(a[0]);  // a second sequence references the first page
  EXPECT_EQ(pool.refcount(a[0]), 2);
  std::vector<int32_t> b{a[0]};
  pool.free(&a);
  EXPECT_EQ(pool.refcount(b[0]), 1) << "still referenced by the second sequence";
  EXPECT_EQ(pool.num_free(), 3);
  pool.free(&b);
  EXPECT_EQ(pool.refcount(0), 0);
  EXPECT_EQ(pool.num_free(), 4);
  std::vector<int32_t> again{0};
  EXPECT_THROW(pool.free(&again), Error) << "below zero";
  EXPECT_THROW(pool.share(0), Error) << "a free, unhashed page cannot be shared";
}

TEST(BlockPool, HashedPagesAreCachedAndEvictedLeastRecentlyReleasedFirst) {
  BlockPool pool(3, 16);
  std::vector<int32_t> a, b;
  ASSERT_TRUE(pool.allocate(1, &a));
  ASSERT_TRUE(pool.allocate(1, &b));
  const int32_t pa = a[0], pb = b[0];
  EXPECT_TRUE(pool.register_hash(pa, 111));
  EXPECT_TRUE(pool.register_hash(pb, 222));
  EXPECT_TRUE(pool.register_hash(pa, 111)) << "registering again is a no-op";
  EXPECT_THROW(pool.register_hash(pb, 333), Error) << "a page holds one hash";
  std::vector<int32_t> x;
  ASSERT_TRUE(pool.allocate(1, &x));
  EXPECT_FALSE(pool.register_hash(x[0], 111)) << "the hash belongs to another page";
  pool.free(&x);  // unhashed: back to the free list
  EXPECT_EQ(pool.lookup(111), pa);
  EXPECT_EQ(pool.lookup(333), -1);
  pool.free(&a);  // released first
  pool.free(&b);
  EXPECT_EQ(pool.num_cached(), 2);
  EXPECT_EQ(pool.num_free(), 3) << "cached pages count as allocatable";
  EXPECT_EQ(pool.num_used(), 0);
  EXPECT_EQ(pool.lookup(222), pb) << "unreferenced but still addressable";
  // A hit takes the cached page back: it leaves the eviction order.
  pool.share(pb);
  EXPECT_EQ(pool.refcount(pb), 1);
  EXPECT_EQ(pool.num_cached(), 1);
  // The free page goes first, then the least recently released cached page is evicted.
  std::vector<int32_t> c;
  ASSERT_TRUE(pool.allocate(2, &c));
  EXPECT_EQ(c.size(), 2u);
  EXPECT_EQ(c[1], pa) << "the cached page is evicted only when the free list is empty";
  EXPECT_EQ(pool.lookup(111), -1) << "an evicted page forgets its hash";
  EXPECT_EQ(pool.lookup(222), pb);
  EXPECT_EQ(pool.num_free(), 0);
  std::vector<int32_t> d;
  EXPECT_FALSE(pool.allocate(1, &d)) << "a referenced hashed page is never evicted";
  std::vector<int32_t> back{pb};
  pool.free(&back);
  ASSERT_TRUE(pool.allocate(1, &d));
  EXPECT_EQ(d[0], pb);
  EXPECT_EQ(pool.lookup(222), -1);
  EXPECT_THROW(pool.register_hash(99, 1), Error);
}

// A prefix-cache reset: every hash is forgotten; cached pages become plain free pages (lowest ids first again),
// a referenced page stays referenced, unaddressable, and goes to the free list (not the cache) when released.
TEST(BlockPool, ClearHashesUnregistersEveryPage) {
  BlockPool pool(4, 16);
  std::vector<int32_t> a, b;
  ASSERT_TRUE(pool.allocate(3, &a));
  ASSERT_TRUE(pool.allocate(1, &b));
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(pool.register_hash(a[size_t(i)], 100 + uint64_t(i)));
  ASSERT_TRUE(pool.register_hash(b[0], 200));
  pool.free(&a);
  ASSERT_EQ(pool.num_cached(), 3);
  EXPECT_EQ(pool.clear_hashes(), 4);
  for (uint64_t h : {100, 101, 102, 200}) EXPECT_EQ(pool.lookup(h), -1) << h;
  EXPECT_EQ(pool.num_cached(), 0);
  EXPECT_EQ(pool.num_free(), 3);
  EXPECT_EQ(pool.num_used(), 1);
  EXPECT_EQ(pool.refcount(b[0]), 1) << "references are untouched";
  const int32_t pb = b[0];
  pool.free(&b);
  EXPECT_EQ(pool.num_cached(), 0) << "unhashed now: released to the free list";
  EXPECT_EQ(pool.num_free(), 4);
  EXPECT_EQ(pool.clear_hashes(), 0);
  std::vector<int32_t> c;
  ASSERT_TRUE(pool.allocate(4, &c));
  EXPECT_EQ(c, (std::vector<int32_t>{0, 1, 2, 3})) << "lowest ids first, as a fresh pool";
  EXPECT_TRUE(pool.register_hash(pb, 200)) << "a hash can be registered again";
  EXPECT_EQ(pool.lookup(200), pb);
}

// Random shares, releases, registrations and allocations against a model of the refcounts: pages
// are never handed out while referenced, and every count adds up.
TEST(BlockPool, RandomOperationsKeepTheInvariants) {
  for (uint32_t seed = 1; seed <= 10; ++seed) {
    std::mt19937 rng(seed);
    const int n = 1 + int(rng() % 12);
    BlockPool pool(n, 4);
    std::vector<int> refs(size_t(n), 0);
    std::vector<std::vector<int32_t>> owners;  // each: the pages one user references
    for (int step = 0; step < 2000; ++step) {
      const int op = int(rng() % 4);
      if (op == 0) {
        std::vector<int32_t> got;
        const int k = int(rng() % 3), before = pool.num_free();
        const bool ok = pool.allocate(k, &got);
        ASSERT_EQ(ok, k <= before);
        for (int32_t p : got) {
          ASSERT_EQ(refs[size_t(p)], 0) << "page " << p << " handed out while referenced";
          refs[size_t(p)] = 1;
          if (rng() % 2) pool.register_hash(p, rng() % 20);
        }
        if (ok) owners.push_back(got);
      } else if (op == 1 && !owners.empty()) {
        auto& o = owners[rng() % owners.size()];
        for (int32_t p : o) --refs[size_t(p)];
        pool.free(&o);
      } else if (op == 2) {
        const int32_t p = pool.lookup(rng() % 20);
        if (p >= 0) {
          pool.share(p);
          ++refs[size_t(p)];
          owners.push_back({p});
        }
      } else if (op == 3 && !owners.empty() && !owners.back().empty()) {
        const int32_t p = owners.back()[0];
        pool.share(p);
        ++refs[size_t(p)];
        owners.push_back({p});
      }
      int used = 0;
      for (int p = 0; p < n; ++p) {
        ASSERT_EQ(pool.refcount(p), refs[size_t(p)]) << "seed " << seed << " page " << p;
        used += refs[size_t(p)] > 0;
      }
      ASSERT_EQ(pool.num_used(), used);
    }
  }
}
