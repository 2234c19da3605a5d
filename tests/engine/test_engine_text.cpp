// The engine's text path with the real tiny tokenizer and a fake backend that replays a script of
// tokens: detokenized deltas, stop strings across token boundaries, stop tokens and their text.
#include <gtest/gtest.h>

#include "engine/engine.h"
#include "engine_util.h"
#include "fake_backend.h"
#include "tokenizer/tokenizer.h"

using namespace ds;
using namespace ds::test;

namespace {

const char* kScript =
    "Hello there, the quick brown fox jumps over the lazy dog. Then it sleeps; STOP here. The end.";

class EngineText : public ::testing::Test {
 protected:
  void SetUp() override {
    tok = Tokenizer::from_dir(std::string(DS_FIXTURES_DIR) + "/tiny/tokenizer");
    script = tok->encode(kScript);
    ASSERT_GT(script.size(), 20u);
    FakeOptions fo;
    fo.vocab = 2048;
    fo.script = script;
    fo.script.push_back(im_end());
    EngineOptions eo;
    eo.max_num_seqs = 8;
    eo.max_num_batched_tokens = 64;
    engine = std::make_unique<Engine>(std::make_unique<FakeBackend>(fo), tok, eo);
    // The text the script produces after its first token.
    expected = tok->decode(std::vector<int32_t>(script.begin() + 1, script.end()));
  }

  int32_t im_end() const { return *tok->token_id("<|im_end|>"); }

  GenerationRequest request(std::vector<std::string> stop = {}, int max_tokens = 200) {
    GenerationRequest r;
    r.prompt_tokens = {script[0]};
    r.max_tokens = max_tokens;
    r.sampling.temperature = 0.0f;
    r.stop = std::move(stop);
    return r;
  }

  // Byte offsets in `expected` where each generated token's text ends.
  std::vector<size_t> token_ends() const {
    std::vector<size_t> ends;
    for (size_t k = 2; k <= script.size(); ++k)
      ends.push_back(tok->decode(std::vector<int32_t>(script.begin() + 1, script.begin() + long(k))).size());
    return ends;
  }

  std::shared_ptr<Tokenizer> tok;
  std::vector<int32_t> script;
  std::unique_ptr<Engine> engine;
  std::string expected;
};

}  // namespace

TEST_F(EngineText, DetokenizedDeltasAndTheTokenizersStopIds) {
  Collected c = run_one(*engine, request());
  // The model's config has no EOS ids here: <|im_end|> stops because it is a tokenizer default.
  EXPECT_EQ(c.finish, FinishReason::Stop);
  EXPECT_EQ(c.stop_reason, "");
  ASSERT_EQ(c.tokens.size(), script.size());
  EXPECT_EQ(c.tokens.back(), im_end());
  EXPECT_EQ(c.text, expected);
  EXPECT_EQ(c.text, std::string(kScript).substr(tok->decode({script[0]}).size()));
  EXPECT_GT(c.deltas.size(), 10u) << "text arrives token by token";

  GenerationRequest ig = request({}, int(script.size()) + 3);
  ig.ignore_eos = true;
  Collected all = run_one(*engine, ig);
  EXPECT_EQ(all.finish, FinishReason::Length);
  EXPECT_EQ(all.tokens.size(), script.size() + 3);
}

TEST_F(EngineText, StopStringAcrossTokenBoundaries) {
  const std::string stop = "fox jumps o";
  const size_t pos = expected.find(stop);
  ASSERT_NE(pos, std::string::npos);
  auto ends = token_ends();
  // The stop string must start and end inside tokens or span several of them.
  size_t first_tok = 0;
  while (ends[first_tok] <= pos) ++first_tok;
  size_t last_tok = first_tok;
  while (ends[last_tok] < pos + stop.size()) ++last_tok;
  ASSERT_GT(last_tok, first_tok) << "the stop string lies within one token; pick another";

  Collected c = run_one(*engine, request({stop}));
  EXPECT_EQ(c.finish, FinishReason::Stop);
  EXPECT_EQ(c.stop_reason, stop);
  EXPECT_EQ(c.text, expected.substr(0, pos));
  // Generation ends with the token that completes the stop string.
  EXPECT_EQ(c.tokens.size(), last_tok + 1);
  // No delta ever carried text past the cut.
  std::string seen;
  for (const auto& d : c.deltas) {
    seen += d;
    EXPECT_EQ(seen, expected.substr(0, seen.size()));
    EXPECT_LE(seen.size(), pos);
  }

  GenerationRequest inc = request({stop});
  inc.include_stop_str_in_output = true;
  Collected ci = run_one(*engine, inc);
  EXPECT_EQ(ci.text, expected.substr(0, pos + stop.size()));
  EXPECT_EQ(ci.tokens.size(), last_tok + 1);
}

TEST_F(EngineText, EarliestOfSeveralStopStringsAndAbsentOnes) {
  Collected c = run_one(*engine, request({"STOP", "lazy", "never appears"}));
  EXPECT_EQ(c.stop_reason, "lazy");
  EXPECT_EQ(c.text, expected.substr(0, expected.find("lazy")));
  Collected none = run_one(*engine, request({"never appears", "STOPX"}));
  EXPECT_EQ(none.finish, FinishReason::Stop);  // by <|im_end|>
  EXPECT_EQ(none.stop_reason, "");
  EXPECT_EQ(none.text, expected) << "held-back text (\"STOP\") is released at the end";
}

TEST_F(EngineText, StopTokenTextIsExcludedUnlessAsked) {
  // Stop on an ordinary token in the middle of the script.
  const size_t k = 8;
  const int32_t stop_tok = script[k];
  size_t first = 1;
  while (script[first] != stop_tok) ++first;
  const std::string before = tok->decode(std::vector<int32_t>(script.begin() + 1, script.begin() + long(first)));
  const std::string with = tok->decode(std::vector<int32_t>(script.begin() + 1, script.begin() + long(first) + 1));
  GenerationRequest r = request();
  r.stop_token_ids = {stop_tok};
  Collected c = run_one(*engine, r);
  EXPECT_EQ(c.finish, FinishReason::Stop);
  EXPECT_EQ(c.stop_reason, std::to_string(stop_tok));
  EXPECT_EQ(c.tokens.size(), first);
  EXPECT_EQ(c.text, before);
  r.include_stop_str_in_output = true;
  Collected ci = run_one(*engine, r);
  EXPECT_EQ(ci.text, with);
}

TEST_F(EngineText, SpecialTokensSkippedOrKept) {
  GenerationRequest r = request({}, int(script.size()) + 1);
  r.ignore_eos = true;  // <|im_end|> becomes ordinary output, then one more token
  Collected skipped = run_one(*engine, r);
  EXPECT_EQ(skipped.text.find("<|im_end|>"), std::string::npos);
  r.skip_special_tokens = false;
  Collected kept = run_one(*engine, r);
  EXPECT_NE(kept.text.find("<|im_end|>"), std::string::npos);
}

TEST_F(EngineText, TokensOnlyRequestsAndMaxTokens) {
  GenerationRequest r = request({}, 5);
  r.detokenize = false;
  Collected c = run_one(*engine, r);
  EXPECT_EQ(c.finish, FinishReason::Length);
  EXPECT_EQ(c.tokens, std::vector<int32_t>(script.begin() + 1, script.begin() + 6));
  EXPECT_TRUE(c.text.empty());
}
