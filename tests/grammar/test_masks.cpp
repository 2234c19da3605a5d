// Token masks against brute force: at every step of random walks through several grammars, the mask
// equals the set of tokens a copy of the matcher accepts, on a small hand-made vocabulary and on the
// tiny model's tokenizer (2,048 ids with specials).
#include <gtest/gtest.h>

#include <random>

#include "grammar_test_util.h"
#include "tokenizer/tokenizer.h"

namespace ds::test {
namespace {

std::shared_ptr<const TokenIndex> tiny_vocab() {
  auto tok = Tokenizer::from_dir(DS_FIXTURES_DIR "/tiny/tokenizer");
  std::vector<std::string> bytes;
  std::vector<bool> special;
  for (int32_t id = 0; id < tok->vocab_size(); ++id) {
    bytes.push_back(tok->token_bytes(id));
    special.push_back(id >= tok->num_base_tokens());
  }
  return std::make_shared<TokenIndex>(bytes, special);
}

std::vector<std::shared_ptr<const Grammar>> grammars() {
  std::vector<std::shared_ptr<const Grammar>> out;
  out.push_back(schema_grammar(R"({"type":"object","properties":{"name":{"type":"string"},"n":{"type":"integer"},
    "tags":{"type":"array","items":{"type":"string"},"maxItems":2},"ok":{"type":"boolean"}},"required":["name","n"]})"));
  out.push_back(schema_grammar(R"({"type":"object","properties":{"x":{"anyOf":[{"type":"number"},{"type":"null"}]},
    "r":{"type":"integer","minimum":-15,"maximum":208},
    "e":{"enum":["a\"b","c"]}},"required":["x","r","e"]})"));
  ConstraintSpec js;
  js.kind = ConstraintSpec::Kind::JsonObject;
  out.push_back(compile_constraint(js));
  out.push_back(regex_grammar("(ab|a)+\"?[0-9]{1,3}"));
  out.push_back(ebnf_grammar("root ::= \"[\" item (\",\" item)* \"]\"\nitem ::= [a-c]+ | \"{\" root? \"}\""));
  ConstraintSpec tc;
  tc.kind = ConstraintSpec::Kind::ToolCall;
  tc.tools = {{"f", nlohmann::ordered_json::parse(R"({"type":"object","properties":{"a":{"type":"integer"}},"required":["a"]})")}};
  out.push_back(compile_constraint(tc));
  return out;
}

void check_walks(const std::shared_ptr<const TokenIndex>& vocab, int walks, int steps) {
  std::mt19937 rng(7);
  const auto gs = grammars();
  for (size_t gi = 0; gi < gs.size(); ++gi) {
    for (int w = 0; w < walks; ++w) {
      GrammarMatcher m(gs[gi], vocab);
      std::vector<uint32_t> bits(size_t(vocab->words()));
      for (int s = 0; s < steps && !m.terminated(); ++s) {
        m.fill_mask(bits.data());
        std::vector<int32_t> allowed;
        int mismatches = 0;
        for (int32_t t = 0; t < vocab->vocab_size(); ++t) {
          GrammarMatcher copy = m;
          const bool ok = copy.accept_token(t);
          const bool bit = (bits[size_t(t) >> 5] >> (t & 31)) & 1u;
          if (ok != bit && mismatches++ < 5)
            ADD_FAILURE() << "grammar " << gi << " walk " << w << " step " << s << ": token " << t << " '"
                          << vocab->bytes(t) << "' brute force " << ok << " mask " << bit;
          if (ok) allowed.push_back(t);
        }
        if (allowed.empty()) {
          EXPECT_TRUE(m.can_end()) << "grammar " << gi << ": stuck before the end";
          break;
        }
        ASSERT_TRUE(m.accept_token(allowed[rng() % allowed.size()]));
      }
    }
  }
}

TEST(Masks, MatchBruteForceOnSmallVocab) { check_walks(small_vocab(), 6, 40); }

TEST(Masks, MatchBruteForceOnTinyTokenizer) { check_walks(tiny_vocab(), 2, 25); }

TEST(Masks, CacheIsSharedAcrossGrammars) {
  auto vocab = small_vocab();
  auto g1 = schema_grammar(R"({"type":"object","properties":{"a":{"type":"string"}},"required":["a"]})");
  auto g2 = schema_grammar(R"({"type":"object","properties":{"b":{"type":"string"}},"required":["b"]})");
  std::vector<uint32_t> bits(size_t(vocab->words()));
  GrammarMatcher m1(g1, vocab);
  ASSERT_TRUE(m1.accept_bytes("{\"a\":\""));
  m1.fill_mask(bits.data());
  const size_t n = vocab->cache_entries();
  GrammarMatcher m2(g2, vocab);
  ASSERT_TRUE(m2.accept_bytes("{\"b\":\""));
  m2.fill_mask(bits.data());
  EXPECT_EQ(vocab->cache_entries(), n);  // the string rule's node masks were reused
}

}  // namespace
}  // namespace ds::test
