#include "bench/gsm8k.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <fstream>

#include "bench/stats.h"
#include "core/error.h"

namespace ds::bench {

using nlohmann::json;

namespace {

bool digit(char c) { return c >= '0' && c <= '9'; }
bool alnum(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; }

struct NumberMatch {
  size_t begin = 0, end = 0;  // [begin, end) including the sign
  std::string canonical;
};

// Whether a number starts at i (a digit, or a '.' right before a digit that does not follow a digit).
bool number_starts(std::string_view t, size_t i) {
  if (digit(t[i])) return true;
  return t[i] == '.' && i + 1 < t.size() && digit(t[i + 1]) && (i == 0 || !digit(t[i - 1]));
}

// Parses the number starting at i (number_starts(t, i) holds).
NumberMatch parse_number_at(std::string_view t, size_t i) {
  NumberMatch m;
  m.begin = i;
  // Sign: a '-' (or U+2212) before the digits, optionally before a '$', not glued to a word or number.
  bool negative = false;
  size_t s = i;
  if (s > 0 && t[s - 1] == '$') --s;
  size_t sign_at = std::string_view::npos;
  if (s > 0 && t[s - 1] == '-')
    sign_at = s - 1;
  else if (s >= 3 && t.substr(s - 3, 3) == "\xE2\x88\x92")
    sign_at = s - 3;
  if (sign_at != std::string_view::npos && (sign_at == 0 || !alnum(t[sign_at - 1]))) {
    negative = true;
    m.begin = sign_at;
  }
  std::string int_part, frac_part;
  size_t j = i;
  while (j < t.size() && digit(t[j])) int_part.push_back(t[j++]);
  // Thousands groups: ",ddd" not followed by another digit.
  while (!int_part.empty() && j + 3 < t.size() && t[j] == ',' && digit(t[j + 1]) && digit(t[j + 2]) &&
         digit(t[j + 3]) && (j + 4 == t.size() || !digit(t[j + 4]))) {
    int_part.append(t.substr(j + 1, 3));
    j += 4;
  }
  if (j + 1 < t.size() && t[j] == '.' && digit(t[j + 1])) {
    ++j;
    while (j < t.size() && digit(t[j])) frac_part.push_back(t[j++]);
  }
  m.end = j;
  const size_t nz = int_part.find_first_not_of('0');
  int_part = nz == std::string::npos ? "0" : int_part.substr(nz);
  while (!frac_part.empty() && frac_part.back() == '0') frac_part.pop_back();
  const bool zero = int_part == "0" && frac_part.empty();
  m.canonical = (negative && !zero ? "-" : "") + int_part + (frac_part.empty() ? "" : "." + frac_part);
  return m;
}

std::vector<NumberMatch> scan_numbers(std::string_view t) {
  std::vector<NumberMatch> out;
  for (size_t i = 0; i < t.size();) {
    if (number_starts(t, i)) {
      out.push_back(parse_number_at(t, i));
      i = out.back().end;
    } else {
      ++i;
    }
  }
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

}  // namespace

std::vector<GsmExample> load_gsm8k(const std::string& path) {
  std::ifstream in(path);
  DS_CHECK(in.good(), "cannot open {} (set --data-dir to the folder with GSM8K's train.jsonl and test.jsonl)", path);
  std::vector<GsmExample> out;
  std::string line;
  for (int lineno = 1; std::getline(in, line); ++lineno) {
    if (trim(line).empty()) continue;
    json j = json::parse(line, nullptr, false);
    DS_CHECK(!j.is_discarded() && j.is_object() && j.contains("question") && j["question"].is_string() &&
                 j.contains("answer") && j["answer"].is_string(),
             "{}:{}: expected {{\"question\": string, \"answer\": string}}", path, lineno);
    out.push_back({j["question"].get<std::string>(), j["answer"].get<std::string>()});
  }
  DS_CHECK(!out.empty(), "{} holds no examples", path);
  return out;
}

std::optional<std::string> normalize_number(std::string_view text) {
  std::string_view t = trim(text);
  if (!t.empty() && t.back() == '.') t.remove_suffix(1);
  auto nums = scan_numbers(t);
  if (nums.size() != 1) return std::nullopt;
  // Only a '$' (after the sign or at the start) may stand outside the number itself.
  std::string rest = std::string(t.substr(0, nums[0].begin)) + std::string(t.substr(nums[0].end));
  rest.erase(std::remove(rest.begin(), rest.end(), '$'), rest.end());
  if (!rest.empty()) return std::nullopt;
  return nums[0].canonical;
}

std::optional<std::string> extract_last_number(std::string_view text) {
  auto nums = scan_numbers(text);
  if (nums.empty()) return std::nullopt;
  return nums.back().canonical;
}

std::string reference_answer(std::string_view solution) {
  const size_t at = solution.rfind("####");
  DS_CHECK(at != std::string_view::npos, "GSM8K answer without '####': {}", solution.substr(0, 80));
  std::string_view rest = solution.substr(at + 4);
  if (auto n = normalize_number(rest)) return *n;
  auto n = extract_last_number(rest);
  DS_CHECK(n.has_value(), "GSM8K answer without a number after '####': {}", rest);
  return *n;
}

std::string truncate_at_next_question(std::string_view output) {
  return std::string(output.substr(0, output.find("Question:")));
}

std::string fewshot_prefix(const std::vector<GsmExample>& shots) {
  std::string s;
  for (const auto& e : shots) s += fmt::format("Question: {}\nAnswer: {}\n\n", e.question, e.answer);
  return s;
}

std::string fewshot_prompt(const std::string& prefix, const std::string& question) {
  return fmt::format("{}Question: {}\nAnswer:", prefix, question);
}

json fewshot_messages(const std::vector<GsmExample>& shots, const std::string& question) {
  json m = json::array();
  for (const auto& e : shots) {
    m.push_back({{"role", "user"}, {"content", "Question: " + e.question}});
    m.push_back({{"role", "assistant"}, {"content", e.answer}});
  }
  m.push_back({{"role", "user"}, {"content", "Question: " + question}});
  return m;
}

GsmSummary summarize_gsm8k(const std::vector<GsmQuestionResult>& results, double duration_s) {
  GsmSummary s;
  s.questions = static_cast<int64_t>(results.size());
  s.duration_s = duration_s;
  std::vector<double> latencies;
  for (const auto& r : results) {
    if (!r.error.empty()) {
      ++s.failed;
      continue;
    }
    if (r.correct) ++s.correct;
    if (!r.extracted) ++s.invalid;
    latencies.push_back(r.latency_s);
    s.prompt_tokens += r.prompt_tokens;
    s.completion_tokens += r.completion_tokens;
  }
  if (s.questions > 0) {
    s.accuracy = static_cast<double>(s.correct) / static_cast<double>(s.questions);
    s.invalid_rate = static_cast<double>(s.invalid) / static_cast<double>(s.questions);
  }
  MetricSummary lat = summarize(latencies, {50, 99});
  s.mean_latency_s = lat.mean;
  s.p50_latency_s = lat.percentiles[0];
  s.p99_latency_s = lat.percentiles[1];
  if (duration_s > 0) s.output_throughput = static_cast<double>(s.completion_tokens) / duration_s;
  return s;
}

std::string format_gsm8k_summary(const GsmSummary& s) {
  std::string out;
  auto row = [&](const std::string& k, const std::string& v) { out += fmt::format("{:<32}{:>14}\n", k, v); };
  out += std::string(46, '=') + "\n" + fmt::format("{:^46}\n", "GSM8K Result") + std::string(46, '=') + "\n";
  row("Questions:", fmt::format("{}", s.questions));
  row("Correct:", fmt::format("{}", s.correct));
  row("Accuracy:", fmt::format("{:.4f}", s.accuracy));
  row("Invalid (no number):", fmt::format("{} ({:.4f})", s.invalid, s.invalid_rate));
  row("Failed requests:", fmt::format("{}", s.failed));
  row("Duration (s):", fmt::format("{:.2f}", s.duration_s));
  row("Mean latency (s):", fmt::format("{:.3f}", s.mean_latency_s));
  row("Median latency (s):", fmt::format("{:.3f}", s.p50_latency_s));
  row("P99 latency (s):", fmt::format("{:.3f}", s.p99_latency_s));
  row("Prompt tokens:", fmt::format("{}", s.prompt_tokens));
  row("Output tokens:", fmt::format("{}", s.completion_tokens));
  row("Output throughput (tok/s):", fmt::format("{:.2f}", s.output_throughput));
  out += std::string(46, '=') + "\n";
  return out;
}

json to_json(const GsmQuestionResult& r) {
  return json{{"index", r.index},
              {"question", r.question},
              {"reference", r.reference},
              {"output", r.output},
              {"extracted", r.extracted ? json(*r.extracted) : json(nullptr)},
              {"correct", r.correct},
              {"invalid", r.error.empty() && !r.extracted},
              {"error", r.error},
              {"latency_s", r.latency_s},
              {"prompt_tokens", r.prompt_tokens},
              {"completion_tokens", r.completion_tokens}};
}

}  // namespace ds::bench
