#include <gtest/gtest.h>

#include <cmath>

#include "core/dtype.h"
#include "core/parallel.h"

TEST(DType, Bf16RoundTripAndRounding) {
  for (float f : {0.0f, 1.0f, -2.5f, 3.14159f, 1e-20f, 65504.0f}) {
    float r = ds::round_bf16(f);
    EXPECT_NEAR(r, f, std::fabs(f) * (1.0f / 128));
  }
  // Round to nearest even: 1 + 2^-8 lies halfway between 1 and 1 + 2^-7; even mantissa wins.
  EXPECT_EQ(ds::round_bf16(1.0f + 1.0f / 256), 1.0f);
  EXPECT_EQ(ds::round_bf16(1.0f + 3.0f / 256), 1.0f + 4.0f / 256);
}

TEST(DType, F16Conversions) {
  for (float f : {0.0f, 1.0f, -2.5f, 0.000061035156f, 65504.0f, 1.0009765625f})
    EXPECT_EQ(ds::f16_to_f32(ds::f32_to_f16(f)), f);
  EXPECT_TRUE(std::isinf(ds::f16_to_f32(ds::f32_to_f16(1e6f))));
}

TEST(Parallel, CoversRangeOnce) {
  std::vector<int> hits(10007, 0);
  ds::parallel_for(hits.size(), [&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i) hits[i]++;
  });
  for (int h : hits) ASSERT_EQ(h, 1);
}
