// Token-mask time of the grammar matcher on a real vocabulary (default: the Kimi tokenizer in
// ../shared/golden/kimi-tokenizer, 163,840 model ids), one core: for each scenario a valid output is
// tokenized with the real tokenizer and walked token by token; each step times fill_mask (the mask
// the sampler would get) and accept_token. The first walk fills the node-mask cache (cold); the
// reported median / p90 / max are of the warm walks. docs/PERF.md records the numbers.
//   bench_grammar [--tokenizer DIR] [--vocab N] [--reps R] [--verify 1]
// --verify 1 also checks every mask of the first walk against brute force (each token on a copy of the
// matcher; minutes).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "grammar/constraint.h"
#include "grammar/matcher.h"
#include "grammar/token_index.h"
#include "tokenizer/tokenizer.h"

namespace {

using Clock = std::chrono::steady_clock;
double us(Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

struct Scenario {
  const char* name;
  ds::ConstraintSpec spec;
  std::string output;  // encoded with allow_special (tool-call markers become their ids)
};

ds::ConstraintSpec schema(const char* s) {
  ds::ConstraintSpec c;
  c.kind = ds::ConstraintSpec::Kind::JsonSchema;
  c.schema = nlohmann::ordered_json::parse(s);
  return c;
}

std::vector<Scenario> scenarios() {
  std::vector<Scenario> out;
  out.push_back({"json_schema person", schema(R"({"type":"object","properties":{
      "name":{"type":"string"},"age":{"type":"integer"},"email":{"type":"string","format":"email"},
      "tags":{"type":"array","items":{"type":"string"},"maxItems":5},
      "address":{"type":"object","properties":{"street":{"type":"string"},"city":{"type":"string"},
        "zip":{"type":"string","pattern":"^[0-9]{5}$"}},"required":["street","city","zip"]},
      "score":{"type":"number"},"active":{"type":"boolean"}},
      "required":["name","age","email","tags","address","score","active"]})"),
      R"({"name": "Ada Lovelace, Countess of Lovelace", "age": 36, "email": "ada@analytical.org", "tags": ["mathematics", "poetry", "engines"], "address": {"street": "12 St James's Square", "city": "London", "zip": "10001"}, "score": 98.25, "active": true})"});
  ds::ConstraintSpec obj;
  obj.kind = ds::ConstraintSpec::Kind::JsonObject;
  out.push_back({"json_object", obj,
                 R"({"summary": "The quarterly report shows revenue growth of 12% driven by cloud services.", "items": [{"id": 1, "label": "cloud"}, {"id": 2, "label": "devices", "notes": null}], "ok": true})"});
  ds::ConstraintSpec tc;
  tc.kind = ds::ConstraintSpec::Kind::ToolCall;
  tc.tools = {{"get_weather", nlohmann::ordered_json::parse(R"({"type":"object","properties":{"city":{"type":"string"},
      "unit":{"enum":["celsius","fahrenheit"]}},"required":["city","unit"]})")},
              {"search", nlohmann::ordered_json::parse(R"({"type":"object","properties":{"query":{"type":"string"}},"required":["query"]})")}};
  out.push_back({"tool_call required", tc,
                 "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>"
                 "{\"city\": \"San Francisco\", \"unit\": \"celsius\"}<|tool_call_end|><|tool_calls_section_end|>"});
  ds::ConstraintSpec re;
  re.kind = ds::ConstraintSpec::Kind::Regex;
  re.pattern = R"(\(\d{3}\) \d{3}-\d{4}( ext\. \d{1,5})?)";
  out.push_back({"regex phone", re, "(415) 555-0100 ext. 42"});
  ds::ConstraintSpec eb;
  eb.kind = ds::ConstraintSpec::Kind::Ebnf;
  eb.grammar = "root ::= sentence (\" \" sentence)*\nsentence ::= word (\" \" word)* \".\"\nword ::= [a-zA-Z]+";
  out.push_back({"ebnf sentences", eb, "The quick brown fox jumps over the lazy dog. It was not amused"
                                       " at all. Then it left."});
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = DS_SOURCE_DIR "/../shared/golden/kimi-tokenizer";
  int vocab = 163840, reps = 5;
  bool verify = false;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--tokenizer")) dir = argv[i + 1];
    else if (!std::strcmp(argv[i], "--vocab")) vocab = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--reps")) reps = std::max(1, std::atoi(argv[i + 1]));
    else if (!std::strcmp(argv[i], "--verify")) verify = std::atoi(argv[i + 1]) != 0;
  }
  try {
    auto tok = ds::Tokenizer::from_dir(dir);
    vocab = std::min(vocab, tok->vocab_size());
    std::vector<std::string> bytes;
    std::vector<bool> special;
    for (int32_t id = 0; id < vocab; ++id) {
      bytes.push_back(tok->token_bytes(id));
      special.push_back(id >= tok->num_base_tokens());
    }
    const auto t0 = Clock::now();
    auto index = std::make_shared<ds::TokenIndex>(bytes, special);
    std::printf("vocabulary: %d ids, trie of %d nodes built in %.1f ms\n", vocab, index->trie_size(), us(Clock::now() - t0) / 1e3);
    std::vector<uint32_t> bits(size_t(index->words()));
    std::vector<double> all;
    for (const Scenario& sc : scenarios()) {
      auto g = ds::compile_constraint(sc.spec);
      const std::vector<int32_t> ids = tok->encode(sc.output, true);
      std::vector<double> mask_us, accept_us;
      double cold_ms = 0;
      for (int r = 0; r <= reps; ++r) {
        ds::GrammarMatcher m(g, index);
        const auto c0 = Clock::now();
        for (int32_t id : ids) {
          const auto a = Clock::now();
          m.fill_mask(bits.data());
          const auto b = Clock::now();
          if (!((bits[size_t(id) >> 5] >> (id & 31)) & 1u)) {
            std::fprintf(stderr, "%s: token %d ('%s') of the valid output is masked\n", sc.name, id, tok->token_bytes(id).c_str());
            return 1;
          }
          if (verify && r == 0) {  // every mask bit against a copy of the matcher (slow)
            for (int32_t t = 0; t < index->vocab_size(); ++t) {
              ds::GrammarMatcher copy = m;
              const bool bit = (bits[size_t(t) >> 5] >> (t & 31)) & 1u;
              if (copy.accept_token(t) != bit) {
                std::fprintf(stderr, "%s: mask bit of token %d is %d, brute force disagrees\n", sc.name, t, int(bit));
                return 1;
              }
            }
          }
          if (!m.accept_token(id)) { std::fprintf(stderr, "%s: token %d rejected\n", sc.name, id); return 1; }
          const auto c = Clock::now();
          if (r > 0) {
            mask_us.push_back(us(b - a));
            accept_us.push_back(us(c - b));
          }
        }
        if (!m.can_end()) { std::fprintf(stderr, "%s: output incomplete\n", sc.name); return 1; }
        if (r == 0) cold_ms = us(Clock::now() - c0) / 1e3;
      }
      all.insert(all.end(), mask_us.begin(), mask_us.end());
      std::sort(mask_us.begin(), mask_us.end());
      std::sort(accept_us.begin(), accept_us.end());
      auto q = [](const std::vector<double>& v, double p) { return v[std::min(v.size() - 1, size_t(p * double(v.size())))]; };
      std::printf("%-20s %3zu tokens  mask median %6.1f us  p90 %6.1f  max %7.1f | accept median %5.1f us | cold walk %7.1f ms\n",
                  sc.name, ids.size(), q(mask_us, 0.5), q(mask_us, 0.9), mask_us.back(), q(accept_us, 0.5), cold_ms);
    }
    std::sort(all.begin(), all.end());
    std::printf("all scenarios: mask median %.1f us, p90 %.1f us (%zu masks); node-mask cache: %zu entries\n",
                all[all.size() / 2], all[size_t(0.9 * double(all.size()))], all.size(), index->cache_entries());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_grammar: %s\n", e.what());
    return 1;
  }
  return 0;
}
