#include <gtest/gtest.h>

#include "engine/stop_matcher.h"

using ds::StopStringMatcher;

namespace {

// Feeds the pieces one by one; returns the concatenated released text and whether it stopped.
std::pair<std::string, std::string> feed(StopStringMatcher& m, const std::vector<std::string>& pieces,
                                         std::vector<std::string>* released = nullptr) {
  std::string out, stop;
  for (const auto& p : pieces) {
    auto r = m.push(p);
    if (released) released->push_back(r.text);
    out += r.text;
    if (r.stopped) {
      stop = r.stop;
      break;
    }
  }
  if (stop.empty()) out += m.flush();
  return {out, stop};
}

}  // namespace

TEST(StopStringMatcher, NoStopsReleasesEverythingAtOnce) {
  StopStringMatcher m({}, false);
  EXPECT_EQ(m.push("abc").text, "abc");
  EXPECT_EQ(m.push("").text, "");
  EXPECT_EQ(m.flush(), "");
}

TEST(StopStringMatcher, StopSplitOverPiecesIsFoundAndHeldBack) {
  StopStringMatcher m({"STOP"}, false);
  std::vector<std::string> rel;
  auto [text, stop] = feed(m, {"Hello S", "T", "OP and more"}, &rel);
  EXPECT_EQ(text, "Hello ");
  EXPECT_EQ(stop, "STOP");
  // "S" could start the stop string, so it is held back; so is "ST".
  ASSERT_EQ(rel.size(), 3u);
  EXPECT_EQ(rel[0], "Hello ");
  EXPECT_EQ(rel[1], "");
  EXPECT_EQ(rel[2], "");
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(m.push("later").text, "") << "nothing after a stop";
  EXPECT_EQ(m.flush(), "");
}

TEST(StopStringMatcher, IncludeStopKeepsTheMatchedString) {
  StopStringMatcher m({"</s>"}, true);
  auto [text, stop] = feed(m, {"ab<", "/", "s>cd"});
  EXPECT_EQ(text, "ab</s>");
  EXPECT_EQ(stop, "</s>");
}

TEST(StopStringMatcher, FalseStartIsReleasedOnceItCannotMatch) {
  StopStringMatcher m({"STOP"}, false);
  EXPECT_EQ(m.push("xS").text, "x");
  EXPECT_EQ(m.push("T").text, "");
  EXPECT_EQ(m.push("x").text, "STx");
  EXPECT_EQ(m.push("ST").text, "");
  EXPECT_EQ(m.flush(), "ST") << "at the end, held text is released";
}

TEST(StopStringMatcher, EarliestOccurrenceWinsAcrossStrings) {
  StopStringMatcher m({"world", "o w"}, false);
  auto [text, stop] = feed(m, {"hello world"});
  EXPECT_EQ(text, "hell");
  EXPECT_EQ(stop, "o w");
  StopStringMatcher same_pos({"ab", "abc"}, true);
  auto r = same_pos.push("xabcd");
  EXPECT_EQ(r.stop, "abc") << "equal positions: the longer one";
  EXPECT_EQ(r.text, "xabc");
}

TEST(StopStringMatcher, OverlappingPrefixesHoldTheLongestCandidate) {
  // "aab" : after "aa" the suffix "aa" is a prefix of "aab"; after "aaa" only "aa" must be held.
  StopStringMatcher m({"aab"}, false);
  EXPECT_EQ(m.push("a").text, "");
  EXPECT_EQ(m.push("a").text, "");
  EXPECT_EQ(m.push("a").text, "a");
  auto r = m.push("b");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.text, "");
}

TEST(StopStringMatcher, MultiByteUtf8StopString) {
  StopStringMatcher m({"停止"}, false);
  std::string s = "好的停止了";
  std::vector<std::string> bytes;
  for (char c : s) bytes.emplace_back(1, c);
  auto [text, stop] = feed(m, bytes);
  EXPECT_EQ(text, "好的");
  EXPECT_EQ(stop, "停止");
}

TEST(StopStringMatcher, EmptyStopStringsAreIgnored) {
  StopStringMatcher m({"", ""}, false);
  EXPECT_TRUE(m.empty());
  EXPECT_EQ(m.push("abc").text, "abc");
}
