// GSM8K answer extraction on the real data and on tricky model outputs; prompt format; summary.
#include <gtest/gtest.h>

#include "bench/gsm8k.h"
#include "core/error.h"

using namespace ds::bench;

namespace {
const std::string kData = std::string(DS_SOURCE_DIR) + "/data/gsm8k";
std::optional<std::string> last(std::string_view s) { return extract_last_number(s); }
}  // namespace

TEST(Gsm8kData, EveryReferenceIsTheLastNumberOfItsSolution) {
  for (const char* split : {"test", "train"}) {
    const auto ex = load_gsm8k(kData + "/" + split + ".jsonl");
    EXPECT_EQ(ex.size(), std::string(split) == "test" ? 1319u : 7473u);
    for (const auto& e : ex) {
      const std::string ref = reference_answer(e.answer);
      // A model that reproduces the reference solution must be graded correct.
      ASSERT_EQ(last(e.answer), ref) << e.answer;
    }
  }
}

TEST(Gsm8kData, KnownReferences) {
  const auto test = load_gsm8k(kData + "/test.jsonl");
  EXPECT_EQ(reference_answer(test[0].answer), "18");     // Janet's ducks
  EXPECT_EQ(reference_answer(test[2].answer), "70000");  // "$70,000" in the worked solution
  EXPECT_EQ(reference_answer("so the total is\n#### 1,234"), "1234");
  EXPECT_EQ(reference_answer("#### -3"), "-3");
  EXPECT_THROW(reference_answer("no marker 5"), ds::Error);
}

TEST(Gsm8kExtract, TrickyOutputs) {
  EXPECT_EQ(last("The answer is 1,234"), "1234");
  EXPECT_EQ(last("She pays $5."), "5");
  EXPECT_EQ(last("It costs $3.50"), "3.5");
  EXPECT_EQ(last("3.50"), last("3.5"));
  EXPECT_EQ(last("2.000"), "2");
  EXPECT_EQ(last("The temperature drops to -7 degrees"), "-7");
  EXPECT_EQ(last("x = (-12)"), "-12");
  EXPECT_EQ(last("loses -$40 overall"), "-40");
  EXPECT_EQ(last("16 - 3 - 4 = 9"), "9");
  EXPECT_EQ(last("5-3"), "3");  // a hyphen between numbers is not a sign
  EXPECT_EQ(last("a 12-year-old"), "12");
  EXPECT_EQ(last("#### 18\n\nThat is all."), "18");
  EXPECT_EQ(last("So she makes 18 dollars.\n"), "18");
  EXPECT_EQ(last("The answer is 18."), "18");
  EXPECT_EQ(last("about .5 of it"), "0.5");
  EXPECT_EQ(last("007 agents"), "7");
  EXPECT_EQ(last("-0"), "0");
  EXPECT_EQ(last("1,000,000 people"), "1000000");
  EXPECT_EQ(last("1, 2, 3"), "3");  // a list, not a thousands separator
  EXPECT_EQ(last("1,23"), "23");    // ",23" is no group of three
  EXPECT_EQ(last("50%"), "50");
  EXPECT_EQ(last("\xE2\x88\x92"
                 "4 degrees"),
            "-4");  // U+2212 minus sign
  EXPECT_EQ(last("No number here."), std::nullopt);
  EXPECT_EQ(last(""), std::nullopt);
  EXPECT_EQ(last("... ,. -"), std::nullopt);
}

TEST(Gsm8kExtract, NormalizeOneNumber) {
  EXPECT_EQ(normalize_number(" $1,234.50 "), "1234.5");
  EXPECT_EQ(normalize_number("18."), "18");
  EXPECT_EQ(normalize_number("-$3"), "-3");
  EXPECT_EQ(normalize_number("3 apples"), std::nullopt);
  EXPECT_EQ(normalize_number("1 2"), std::nullopt);
  EXPECT_EQ(normalize_number("abc"), std::nullopt);
}

TEST(Gsm8kPrompt, FewShotFormat) {
  std::vector<GsmExample> shots = {{"Q1?", "A1\n#### 1"}, {"Q2?", "A2\n#### 2"}};
  const std::string prefix = fewshot_prefix(shots);
  EXPECT_EQ(prefix, "Question: Q1?\nAnswer: A1\n#### 1\n\nQuestion: Q2?\nAnswer: A2\n#### 2\n\n");
  EXPECT_EQ(fewshot_prompt(prefix, "Q3?"), prefix + "Question: Q3?\nAnswer:");
  EXPECT_EQ(fewshot_prompt("", "Q3?"), "Question: Q3?\nAnswer:");
  const auto m = fewshot_messages(shots, "Q3?");
  ASSERT_EQ(m.size(), 5u);
  EXPECT_EQ(m[0]["role"], "user");
  EXPECT_EQ(m[0]["content"], "Question: Q1?");
  EXPECT_EQ(m[1]["role"], "assistant");
  EXPECT_EQ(m[1]["content"], "A1\n#### 1");
  EXPECT_EQ(m[4]["content"], "Question: Q3?");
  EXPECT_EQ(truncate_at_next_question(" 5 + 3 = 8\n#### 8\n\nQuestion: next one 99"), " 5 + 3 = 8\n#### 8\n\n");
}

TEST(Gsm8kSummary, CountsAndRates) {
  std::vector<GsmQuestionResult> rs(4);
  rs[0].correct = true, rs[0].extracted = "18", rs[0].latency_s = 1.0, rs[0].completion_tokens = 10;
  rs[1].extracted = "17", rs[1].latency_s = 2.0, rs[1].completion_tokens = 20;
  rs[2].latency_s = 3.0, rs[2].completion_tokens = 30;  // no number: invalid
  rs[3].error = "HTTP 500";
  const GsmSummary s = summarize_gsm8k(rs, 2.0);
  EXPECT_EQ(s.questions, 4);
  EXPECT_EQ(s.correct, 1);
  EXPECT_EQ(s.invalid, 1);
  EXPECT_EQ(s.failed, 1);
  EXPECT_DOUBLE_EQ(s.accuracy, 0.25);
  EXPECT_DOUBLE_EQ(s.invalid_rate, 0.25);
  EXPECT_DOUBLE_EQ(s.mean_latency_s, 2.0);
  EXPECT_DOUBLE_EQ(s.p50_latency_s, 2.0);
  EXPECT_EQ(s.completion_tokens, 60);
  EXPECT_DOUBLE_EQ(s.output_throughput, 30.0);
  const auto j = to_json(rs[2]);
  EXPECT_EQ(j["invalid"], true);
  EXPECT_EQ(j["extracted"], nullptr);
}
