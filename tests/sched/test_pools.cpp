#include <gtest/gtest.h>

#include <algorithm>

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
