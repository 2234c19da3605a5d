#include "bench/dataset.h"

#include <cmath>
#include <fstream>
#include <random>

#include "core/error.h"

namespace ds::bench {

using nlohmann::json;

namespace {

// Common English words: each is one token in most BPE vocabularies (with its leading space).
constexpr const char* kWords[] = {
    "time",      "year",       "people",      "way",       "day",       "man",       "thing",  "woman",      "life",
    "child",     "world",      "school",      "state",     "family",    "student",   "group",  "country",    "problem",
    "hand",      "part",       "place",       "case",      "week",      "company",   "system", "program",    "question",
    "work",      "government", "number",      "night",     "point",     "home",      "water",  "room",       "mother",
    "area",      "money",      "story",       "fact",      "month",     "lot",       "right",  "study",      "book",
    "eye",       "job",        "word",        "business",  "issue",     "side",      "kind",   "head",       "house",
    "service",   "friend",     "father",      "power",     "hour",      "game",      "line",   "end",        "member",
    "law",       "car",        "city",        "community", "name",      "president", "team",   "minute",     "idea",
    "kid",       "body",       "information", "back",      "parent",    "face",      "others", "level",      "office",
    "door",      "health",     "person",      "art",       "war",       "history",   "party",  "result",     "change",
    "morning",   "reason",     "research",    "girl",      "guy",       "moment",    "air",    "teacher",    "force",
    "education", "good",       "new",         "first",     "last",      "long",      "great",  "little",     "own",
    "other",     "old",        "big",         "high",      "different", "small",     "large",  "next",       "early",
    "young",     "important",  "few",         "public",    "bad",       "same",      "able",   "be",         "have",
    "do",        "say",        "go",          "get",       "make",      "know",      "think",  "take",       "see",
    "come",      "want",       "look",        "use",       "find",      "give",      "tell",   "ask",        "seem",
    "feel",      "try",        "leave",       "call",      "keep",      "let",       "begin",  "help",       "talk",
    "turn",      "start",      "show",        "hear",      "play",      "run",       "move",   "like",       "live",
    "believe",   "hold",       "bring",       "happen",    "write",     "provide",   "sit",    "stand",      "lose",
    "pay",       "meet",       "include",     "continue",  "set",       "learn",     "lead",   "understand", "watch",
    "follow",    "stop",       "create",      "speak",     "read",      "spend",     "grow",   "open",       "walk",
    "win",       "offer",      "remember",    "love",      "consider",  "appear",    "buy",    "wait",       "serve",
    "die",       "send",       "expect",      "build",     "stay",      "fall",      "cut",    "reach",      "kill",
    "remain",    "the",        "of",          "and",       "to",        "in",        "for",    "on",         "with",
    "at",        "by",         "from",        "up",        "about",     "into",      "over",   "after",      "river",
    "mountain",  "garden",     "window",      "letter",    "music",     "color",     "table",  "paper",      "street",
    "market",    "bridge",     "forest",      "island",    "ocean",     "summer",    "winter",
};
constexpr size_t kNumWords = sizeof(kWords) / sizeof(kWords[0]);

int64_t draw_len(std::mt19937_64& rng, int64_t len, double ratio) {
  const int64_t lo = std::max<int64_t>(1, static_cast<int64_t>(std::floor(static_cast<double>(len) * (1.0 - ratio))));
  const int64_t hi = std::max(lo, static_cast<int64_t>(std::ceil(static_cast<double>(len) * (1.0 + ratio))));
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
}

}  // namespace

json user_messages(std::string text) { return json::array({json{{"role", "user"}, {"content", std::move(text)}}}); }

std::vector<BenchPrompt> make_random_dataset(const RandomDatasetOptions& o, int64_t num_prompts, EndpointType type,
                                             uint64_t seed) {
  DS_CHECK(o.input_len > 0 && o.output_len > 0, "--random-input-len and --random-output-len must be positive");
  DS_CHECK(o.range_ratio >= 0.0 && o.range_ratio < 1.0, "--random-range-ratio must be in [0, 1), got {}",
           o.range_ratio);
  DS_CHECK(o.vocab_size > 0, "--vocab-size must be positive");
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> token(0, o.vocab_size - 1);
  std::uniform_int_distribution<size_t> word(0, kNumWords - 1);
  std::vector<BenchPrompt> out;
  out.reserve(static_cast<size_t>(num_prompts));
  for (int64_t i = 0; i < num_prompts; ++i) {
    BenchPrompt p;
    const int64_t in_len = draw_len(rng, o.input_len, o.range_ratio);
    p.max_tokens = draw_len(rng, o.output_len, o.range_ratio);
    if (type == EndpointType::Completions) {
      std::vector<int64_t> ids(static_cast<size_t>(in_len));
      for (auto& id : ids) id = token(rng);
      p.prompt = std::move(ids);
      p.prompt_len = in_len;
    } else {
      std::string text;
      for (int64_t w = 0; w < in_len; ++w) {
        if (w) text.push_back(' ');
        text += kWords[word(rng)];
      }
      p.prompt = user_messages(std::move(text));
    }
    out.push_back(std::move(p));
  }
  return out;
}

std::string words_text(const std::vector<int64_t>& ids) {
  std::string text;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) text.push_back(' ');
    text += kWords[size_t(ids[i]) % kNumWords];
  }
  return text;
}

std::vector<BenchPrompt> load_jsonl_dataset(const std::string& path, int64_t num_prompts, EndpointType type,
                                            int64_t default_output_len) {
  std::ifstream in(path);
  DS_CHECK(in.good(), "cannot open --dataset-path {}", path);
  std::vector<BenchPrompt> lines;
  std::string line;
  for (int lineno = 1; std::getline(in, line); ++lineno) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    json j = json::parse(line, nullptr, false);
    DS_CHECK(!j.is_discarded() && j.is_object(), "{}:{}: not a JSON object", path, lineno);
    BenchPrompt p;
    p.max_tokens = default_output_len;
    for (const char* key : {"max_tokens", "output_len"})
      if (j.contains(key)) {
        DS_CHECK(j[key].is_number_integer() && j[key].get<int64_t>() > 0, "{}:{}: {} must be a positive integer", path,
                 lineno, key);
        p.max_tokens = j[key].get<int64_t>();
      }
    if (j.contains("messages")) {
      DS_CHECK(j["messages"].is_array() && !j["messages"].empty(), "{}:{}: messages must be a non-empty array", path,
               lineno);
      DS_CHECK(type == EndpointType::Chat,
               "{}:{}: a \"messages\" line needs --endpoint-type chat (the chat template is the server's)", path,
               lineno);
      p.prompt = j["messages"];
    } else if (j.contains("prompt")) {
      const json& pr = j["prompt"];
      if (pr.is_string()) {
        p.prompt = type == EndpointType::Chat ? user_messages(pr.get<std::string>()) : pr;
      } else {
        DS_CHECK(pr.is_array() && !pr.empty(), "{}:{}: prompt must be a string or an array of token ids", path, lineno);
        for (const auto& id : pr) DS_CHECK(id.is_number_integer(), "{}:{}: prompt ids must be integers", path, lineno);
        DS_CHECK(type == EndpointType::Completions, "{}:{}: token-id prompts need --endpoint-type completions", path,
                 lineno);
        p.prompt = pr;
        p.prompt_len = static_cast<int64_t>(pr.size());
      }
    } else {
      fail("{}:{}: no \"prompt\" or \"messages\" field", path, lineno);
    }
    lines.push_back(std::move(p));
  }
  DS_CHECK(!lines.empty(), "{} holds no prompts", path);
  if (num_prompts <= 0) return lines;
  std::vector<BenchPrompt> out;
  out.reserve(static_cast<size_t>(num_prompts));
  for (int64_t i = 0; i < num_prompts; ++i) out.push_back(lines[static_cast<size_t>(i) % lines.size()]);
  return out;
}

std::vector<BenchPrompt> make_fixed_dataset(const std::string& text, int64_t num_prompts, EndpointType type,
                                            int64_t output_len) {
  DS_CHECK(!text.empty(), "--dataset fixed needs --prompt TEXT");
  DS_CHECK(output_len > 0, "--output-len must be positive");
  BenchPrompt p;
  p.prompt = type == EndpointType::Chat ? user_messages(text) : json(text);
  p.max_tokens = output_len;
  return std::vector<BenchPrompt>(static_cast<size_t>(num_prompts), p);
}

}  // namespace ds::bench
