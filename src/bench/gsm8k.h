// GSM8K few-shot evaluation, the pure parts: loading the JSONL splits, building the few-shot prompt
// ("Question: ...\nAnswer: ...\n\n" per shot, then "Question: ...\nAnswer:"), pulling the final answer out
// of a model's output (the last number in it) and comparing numbers by value ("1,234" == "1234",
// "3.50" == "3.5", "$5" == "5"), and summarizing per-question results.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ds::bench {

struct GsmExample {
  std::string question;
  std::string answer;  // worked solution ending in "#### <number>"
};

// Reads {"question", "answer"} lines; throws ds::Error on a missing file or a malformed line.
std::vector<GsmExample> load_gsm8k(const std::string& path);

// The canonical form of the number in `text` (which must be exactly one number, possibly with "$",
// thousands commas, a sign, a trailing period): no commas, no leading zeros, no trailing fractional
// zeros, "-0" -> "0". nullopt when `text` is not a number.
std::optional<std::string> normalize_number(std::string_view text);

// The canonical form of the last number in `text`, nullopt when there is none. A '-' is a sign only
// when it does not follow a letter or digit ("5-3" ends in 3, "x = -3" in -3); "," joins digit groups of
// three ("1,234"); "." is a decimal point only between or before digits ("18." is 18).
std::optional<std::string> extract_last_number(std::string_view text);

// The reference answer of a solution: the number after "####". Throws ds::Error when absent.
std::string reference_answer(std::string_view solution);

// `output` up to the first "Question:" (a server that ignores the stop string runs on into a new shot).
std::string truncate_at_next_question(std::string_view output);

std::string fewshot_prefix(const std::vector<GsmExample>& shots);  // "Question: q\nAnswer: a\n\n" each
std::string fewshot_prompt(const std::string& prefix, const std::string& question);  // + "Question: q\nAnswer:"
// Chat form: each shot as a user turn "Question: q" and an assistant turn "a", then the question.
nlohmann::json fewshot_messages(const std::vector<GsmExample>& shots, const std::string& question);

struct GsmQuestionResult {
  int64_t index = 0;
  std::string question, reference;
  std::string output;                    // the model's answer text (truncated at a next "Question:")
  std::optional<std::string> extracted;  // last number of output
  bool correct = false;
  std::string error;  // request failure, empty on success
  double latency_s = 0;
  int64_t prompt_tokens = 0, completion_tokens = 0;
};

struct GsmSummary {
  int64_t questions = 0, correct = 0, invalid = 0, failed = 0;  // invalid: answered without any number
  double accuracy = 0, invalid_rate = 0;                        // over all questions
  double duration_s = 0, mean_latency_s = 0, p50_latency_s = 0, p99_latency_s = 0;
  int64_t prompt_tokens = 0, completion_tokens = 0;
  double output_throughput = 0;  // completion tokens / duration
};

GsmSummary summarize_gsm8k(const std::vector<GsmQuestionResult>& results, double duration_s);
std::string format_gsm8k_summary(const GsmSummary& s);
nlohmann::json to_json(const GsmQuestionResult& r);

}  // namespace ds::bench
