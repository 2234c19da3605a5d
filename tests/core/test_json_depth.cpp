#include <gtest/gtest.h>

#include <string>

#include "core/json_depth.h"

namespace ds {

TEST(JsonDepth, CountsNestingOutsideStrings) {
  EXPECT_EQ(json_nesting_depth("1"), 0u);
  EXPECT_EQ(json_nesting_depth("{}"), 1u);
  EXPECT_EQ(json_nesting_depth(R"({"a":[1,{"b":[]}],"c":{}})"), 4u);
  EXPECT_EQ(json_nesting_depth(R"({"a":"[[[[{{{\"[[["})"), 1u);  // brackets inside strings, escaped quote
  EXPECT_EQ(json_nesting_depth(R"(["\\",[]])"), 2u);               // an escaped backslash ends the escape
}

TEST(JsonDepth, StopsPastTheLimit) {
  std::string deep(20000, '[');
  EXPECT_EQ(json_nesting_depth(deep, 100), 101u);
  std::string ok = std::string(100, '[') + std::string(100, ']');
  EXPECT_EQ(json_nesting_depth(ok, 100), 100u);
  EXPECT_EQ(json_nesting_depth(ok + "[" + std::string(101, '{'), 100), 101u);
}

}  // namespace ds
