// Encode/decode against the golden tiktoken outputs (tests/fixtures/tiny/tokenizer).
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "core/error.h"
#include "tokenizer/bpe.h"
#include "tokenizer/detokenizer.h"
#include "tokenizer/encode_bench.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode_props.h"

namespace {

const std::string kTokDir = std::string(DS_FIXTURES_DIR) + "/tiny/tokenizer";

nlohmann::json load_json(const std::string& path) {
  std::ifstream f(path);
  EXPECT_TRUE(f.good()) << path;
  return nlohmann::json::parse(f);
}

std::shared_ptr<ds::Tokenizer> tiny() {
  static auto tok = ds::Tokenizer::from_dir(kTokDir);
  return tok;
}

std::string show(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) s += std::to_string(id) + " ";
  return s;
}

TEST(Tokenizer, LoadsVocabularyAndSpecials) {
  auto tok = tiny();
  EXPECT_EQ(tok->num_base_tokens(), 1790);
  EXPECT_EQ(tok->vocab_size(), 2048);
  EXPECT_EQ(tok->bos_id(), 1790);
  EXPECT_EQ(tok->eos_id(), 1791);
  EXPECT_EQ(tok->pad_id(), 2045);
  EXPECT_EQ(tok->token_id("<|im_end|>"), 1792);
  EXPECT_EQ(tok->token_id("<|im_middle|>"), 1807);
  EXPECT_EQ(tok->token_bytes(1795), "<|reserved_token_1795|>");
  EXPECT_EQ(tok->token_id("<|reserved_token_1795|>"), 1795);
  EXPECT_TRUE(tok->is_special(1790));
  EXPECT_TRUE(tok->is_special(2047));
  EXPECT_FALSE(tok->is_special(1789));
  EXPECT_EQ(tok->token_id("a"), 97);
  EXPECT_FALSE(tok->token_id("definitely not a token").has_value());
  EXPECT_EQ(tok->default_stop_ids(), (std::vector<int32_t>{1792, 1791, 1799}));
  EXPECT_THROW(tok->token_bytes(2048), ds::Error);
  EXPECT_THROW(tok->decode({5000}), ds::Error);
}

TEST(Tokenizer, GoldenEncodeBothModesAndRoundTrip) {
  auto tok = tiny();
  auto cases = load_json(kTokDir + "/encode_cases.json");
  ASSERT_EQ(cases.size(), 1571u);
  int bad = 0;
  for (const auto& c : cases) {
    const std::string text = c["text"].get<std::string>();
    const auto ordinary = c["ordinary"].get<std::vector<int32_t>>();
    const auto special = c["with_special"].get<std::vector<int32_t>>();
    auto got_o = tok->encode(text, false);
    auto got_s = tok->encode(text, true);
    if (got_o != ordinary || got_s != special) {
      if (++bad < 20)
        ADD_FAILURE() << "text " << nlohmann::json(text).dump() << "\n ordinary want " << show(ordinary)
                      << "\n          got  " << show(got_o) << "\n special  want " << show(special)
                      << "\n          got  " << show(got_s);
    }
    EXPECT_EQ(tok->decode(got_o), text);
    EXPECT_EQ(tok->decode(got_s), text);
  }
  EXPECT_EQ(bad, 0);
}

}  // namespace

namespace {

TEST(Tokenizer, SpecialTokenTextInBothModes) {
  auto tok = tiny();
  auto ids = tok->encode("a<|im_end|>b[EOS]<|reserved_token_2000|>", true);
  std::vector<int32_t> want = {97, 1792, 98, 1791, 2000};
  EXPECT_EQ(ids, want);
  auto plain = tok->encode("a<|im_end|>b", false);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 1792), 0);
  EXPECT_EQ(tok->decode(plain), "a<|im_end|>b");
  // A special name cut short is plain text; the longest name wins where names overlap.
  EXPECT_EQ(tok->decode(tok->encode("<|im_end", true)), "<|im_end");
  EXPECT_EQ(tok->encode("<|im_end|>", true), std::vector<int32_t>{1792});
}

TEST(Tokenizer, DecodeReplacesInvalidUtf8LikePython) {
  auto tok = tiny();
  // Byte tokens: ids 0..255 are the single bytes in this vocabulary (checked first).
  for (int b = 0; b < 256; ++b) ASSERT_EQ(tok->token_bytes(b), std::string(1, char(b)));
  auto dec = [&](std::vector<int32_t> ids) { return tok->decode(ids); };
  const std::string fffd = "\xEF\xBF\xBD";
  EXPECT_EQ(dec({0xE4, 0xBD, 0xA0}), "你");
  EXPECT_EQ(dec({0xE4, 0xBD}), fffd);                      // truncated: one U+FFFD
  EXPECT_EQ(dec({0xE4, 0xBD, 'A'}), fffd + "A");           // maximal subpart
  EXPECT_EQ(dec({0xF0, 0x80, 0x80}), fffd + fffd + fffd);  // F0 80 is never valid
  EXPECT_EQ(dec({0xED, 0xA0, 0x80}), fffd + fffd + fffd);  // surrogate
  EXPECT_EQ(dec({0xC0, 0xAF}), fffd + fffd);               // overlong
  EXPECT_EQ(dec({0xFF, 'x', 0x80}), fffd + "x" + fffd);
  EXPECT_EQ(dec({0xF4, 0x90, 0x80, 0x80}), fffd + fffd + fffd + fffd);  // > U+10FFFF
  EXPECT_EQ(dec({1790, 'a', 1792}), "[BOS]a<|im_end|>");
  EXPECT_EQ(tok->decode({1790, 'a', 1792}, true), "a");
}

TEST(Detokenizer, StreamingEqualsFullDecodeOnGoldenStrings) {
  auto tok = tiny();
  auto cases = load_json(kTokDir + "/encode_cases.json");
  for (const auto& c : cases) {
    for (bool skip : {false, true}) {
      const auto ids = c["with_special"].get<std::vector<int32_t>>();
      ds::IncrementalDetokenizer d(*tok, skip);
      std::string streamed;
      for (int32_t id : ids) {
        std::string piece = d.push(id);
        // Never a partial character: every delta is valid UTF-8 on its own.
        std::string check;
        ds::unicode::utf8_replace_invalid(piece, check);
        ASSERT_EQ(check, piece);
        streamed += piece;
      }
      streamed += d.flush();
      ASSERT_EQ(streamed, tok->decode(ids, skip)) << c["text"].dump();
    }
  }
}

TEST(Detokenizer, HoldsIncompleteCharactersAndFlushesInvalidBytes) {
  auto tok = tiny();
  ds::IncrementalDetokenizer d(*tok, false);
  EXPECT_EQ(d.push(0xF0), "");
  EXPECT_EQ(d.push(0x9F), "");
  EXPECT_EQ(d.push(0x98), "");
  EXPECT_EQ(d.push(0x80), "\xF0\x9F\x98\x80");  // 😀
  EXPECT_EQ(d.push(0xE4), "");
  EXPECT_EQ(d.push('x'), "\xEF\xBF\xBD" "x");     // cannot complete: replaced at once
  EXPECT_EQ(d.push(0xE4), "");
  EXPECT_EQ(d.pending_bytes(), 1u);
  EXPECT_EQ(d.flush(), "\xEF\xBF\xBD");
  EXPECT_EQ(d.flush(), "");
}

// Random byte strings: the two merge strategies agree, and both agree with a direct
// transcription of tiktoken's loop (leftmost lowest rank first).
std::vector<int32_t> reference_bpe(const ds::BpeRanks& r, std::string_view piece) {
  std::vector<std::string> parts;
  for (char c : piece) parts.emplace_back(1, c);
  for (;;) {
    int32_t best = ds::BpeRanks::kNone;
    size_t bi = 0;
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      int32_t rk = r.find(parts[i] + parts[i + 1]);
      if (rk < best) best = rk, bi = i;
    }
    if (best == ds::BpeRanks::kNone) break;
    parts[bi] += parts[bi + 1];
    parts.erase(parts.begin() + long(bi) + 1);
  }
  std::vector<int32_t> ids;
  for (const auto& p : parts) ids.push_back(r.find(p));
  return ids;
}

TEST(Bpe, MergeStrategiesMatchReferenceOnRandomPieces) {
  std::mt19937 rng(123);
  // A vocabulary over a small alphabet so that merges chain: all bytes, then random strings.
  std::vector<std::string> vocab;
  for (int b = 0; b < 256; ++b) vocab.emplace_back(1, char(b));
  const std::string alpha = "abcab";
  std::set<std::string> seen(vocab.begin(), vocab.end());
  while (vocab.size() < 3000) {
    std::string s;
    size_t len = 2 + rng() % 7;
    for (size_t i = 0; i < len; ++i) s += alpha[rng() % alpha.size()];
    if (seen.insert(s).second) vocab.push_back(s);
  }
  ds::BpeRanks r;
  r.build(vocab);
  EXPECT_EQ(r.size(), vocab.size());
  for (int t = 0; t < 400; ++t) {
    std::string piece;
    size_t len = 1 + rng() % (t < 300 ? 40 : 400);
    for (size_t i = 0; i < len; ++i) piece += alpha[rng() % alpha.size()];
    std::vector<int32_t> small, heap, enc;
    r.merge_small(piece, small);
    r.merge_heap(piece, heap);
    r.encode_piece(piece, enc);
    auto ref = reference_bpe(r, piece);
    ASSERT_EQ(small, ref) << piece;
    ASSERT_EQ(heap, ref) << piece;
    std::string back;
    for (int32_t id : enc) back += vocab[size_t(id)];
    ASSERT_EQ(back, piece);
  }
  std::vector<std::string> dup = vocab;
  dup.push_back("ab");
  EXPECT_THROW(r.build(dup), ds::Error);
  std::vector<std::string> missing(vocab.begin() + 1, vocab.end());
  EXPECT_THROW(r.build(missing), ds::Error);
}

TEST(Tokenizer, QktSlicingOfLongRuns) {
  auto tok = tiny();
  // QK-T cuts runs of more than 25,000 space or non-space characters, and windows of 400,000.
  const std::string a30k(30000, 'a');
  auto joined = tok->encode(std::string(25000, 'a'));
  auto tail = tok->encode(std::string(5000, 'a'));
  joined.insert(joined.end(), tail.begin(), tail.end());
  EXPECT_EQ(tok->encode(a30k), joined);
  EXPECT_EQ(ds::qkt_slice_starts(a30k), (std::vector<size_t>{0, 25000}));
  // Runs are counted in code points, and a space resets the non-space run.
  std::string han;
  for (int i = 0; i < 25001; ++i) han += "\xE4\xBD\xA0";  // 你
  EXPECT_EQ(ds::qkt_slice_starts(han), (std::vector<size_t>{0, 75000}));
  std::string mixed = std::string(20000, 'b') + " " + std::string(20000, 'b');
  EXPECT_EQ(ds::qkt_slice_starts(mixed), (std::vector<size_t>{0}));
  std::string spaces = "x" + std::string(25001, ' ') + "y";
  EXPECT_EQ(ds::qkt_slice_starts(spaces), (std::vector<size_t>{0, 25001}));
  std::string words;
  while (words.size() < 900000) words += "word ";
  auto starts = ds::qkt_slice_starts(words);
  EXPECT_EQ(starts, (std::vector<size_t>{0, 400000, 800000}));
  EXPECT_EQ(tok->decode(tok->encode(words)), words);
}

TEST(Tokenizer, ParallelEncodeEqualsSerial) {
  auto tok = tiny();
  auto cases = load_json(kTokDir + "/encode_cases.json");
  std::string text;
  while (text.size() < (3u << 20)) {
    for (const auto& c : cases) {
      text += c["text"].get<std::string>();
      text += (text.size() % 7 == 0) ? "\n" : (text.size() % 5 == 0 ? "<|im_end|>\n" : " ");
    }
  }
  for (bool special : {true, false}) {
    auto serial = tok->encode_serial(text, special);
    auto parallel = tok->encode(text, special);
    ASSERT_EQ(parallel, serial);
    EXPECT_EQ(tok->decode(serial), text);
  }
  // Cut points are piece boundaries: after '\n' and before a non-space.
  for (size_t cut : ds::safe_cut_points(text, 1 << 16)) {
    ASSERT_EQ(text[cut - 1], '\n');
    ASSERT_NE(text[cut], ' ');
  }
}

TEST(Tokenizer, VocabCheckAgainstModel) {
  auto tok = tiny();
  EXPECT_EQ(tok->vocab_problem(2048), "");
  EXPECT_NO_THROW(tok->check_vocab(2048));
  EXPECT_NO_THROW(tok->check_vocab(2046));  // only unnamed reserved ids beyond the model: fine
  EXPECT_NO_THROW(tok->check_vocab(4096));  // padded embedding rows: fine
  EXPECT_THROW(tok->check_vocab(1000), ds::Error);
  EXPECT_NE(tok->vocab_problem(1000).find("1790 base tokens"), std::string::npos);
  EXPECT_NE(tok->vocab_problem(2045).find("[PAD]"), std::string::npos) << tok->vocab_problem(2045);
}

TEST(Tokenizer, SyntheticFullSizeVocabularyRoundTrips) {
  std::string corpus = ds::make_bench_text(300000, 3);
  auto vocab = ds::synthetic_vocab(corpus, 163584);
  ASSERT_EQ(vocab.size(), 163584u);
  ds::Tokenizer big(vocab, nlohmann::json::object());
  EXPECT_EQ(big.vocab_size(), 163584 + 258);
  std::string text = ds::make_bench_text(200000, 11);
  auto ids = big.encode(text);
  EXPECT_LT(ids.size(), text.size() / 3);  // the large vocabulary compresses
  EXPECT_EQ(big.decode(ids), text);
  EXPECT_EQ(ids, big.encode_serial(text));
}

TEST(Tokenizer, MalformedFilesFailClearly) {
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / "ds_tok_test_bad";
  fs::create_directories(dir);
  {
    std::ofstream(dir / "tiktoken.model") << "QQ== 0\nnot-base64! 1\n";
  }
  try {
    ds::Tokenizer::from_dir(dir.string());
    ADD_FAILURE() << "expected an error";
  } catch (const ds::Error& e) {
    EXPECT_NE(std::string(e.what()).find(":2:"), std::string::npos) << e.what();
  }
  EXPECT_THROW(ds::Tokenizer::from_dir((dir / "nope").string()), ds::Error);
  fs::remove_all(dir);
}

}  // namespace
