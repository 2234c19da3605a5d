#include "tokenizer/pretokenizer.h"

#include "tokenizer/unicode_props.h"

namespace ds {
namespace {

using namespace ds::unicode;

constexpr uint8_t kUpperSet = kLuLt | kLmLo | kMark;  // U before removing Han
constexpr uint8_t kLowerSet = kLl | kLmLo | kMark;    // L before removing Han

inline bool is_upper(uint8_t f) { return (f & kUpperSet) && !(f & kHan); }
inline bool is_lower(uint8_t f) { return (f & kLowerSet) && !(f & kHan); }
inline bool is_other(uint8_t f) { return !(f & (kSpace | kLetter | kNum)); }  // [^\s\p{L}\p{N}]

class Splitter {
 public:
  explicit Splitter(std::string_view t)
      : s_(reinterpret_cast<const unsigned char*>(t.data())), n_(t.size()) {}

  size_t piece_end(size_t p) const {
    uint32_t cp0;
    int len0;
    const uint8_t f0 = at(p, len0, cp0);
    if (f0 & kHan) return run(p + len0, [](uint8_t f) { return (f & kHan) != 0; });  // 1
    if (size_t e = letters(p, f0, cp0, len0, true)) return e;                          // 2
    if (size_t e = letters(p, f0, cp0, len0, false)) return e;                         // 3
    if (f0 & kNum) {                                                                   // 4
      size_t e = p + len0;
      for (int count = 1; count < 3 && e < n_; ++count) {
        int len;
        uint32_t cp;
        if (!(at(e, len, cp) & kNum)) break;
        e += len;
      }
      return e;
    }
    size_t q = p;  // 5
    if (cp0 == ' ' && p + 1 < n_) {
      int len;
      uint32_t cp;
      if (is_other(at(p + 1, len, cp))) q = p + 1;
    }
    if (q > p || is_other(f0)) {
      size_t e = run(q, is_other);
      while (e < n_ && (s_[e] == '\r' || s_[e] == '\n')) ++e;
      return e;
    }
    // 6, 7, 8: f0 is white space.
    size_t e = p, last_start = p, last_newline = 0;
    bool have_newline = false;
    while (e < n_) {
      int len;
      uint32_t cp;
      if (!(at(e, len, cp) & kSpace)) break;
      if (cp == '\r' || cp == '\n') last_newline = e, have_newline = true;
      last_start = e;
      e += len;
    }
    if (have_newline) return last_newline + 1;  // \s*[\r\n]+
    if (e == n_) return e;                       // \s+(?!\S) at the end of the text
    if (last_start > p) return last_start;       // \s+(?!\S): give back the last space
    return e > p ? e : p + len0;                 // \s+ (the guard is never needed)
  }

 private:
  uint8_t at(size_t i, int& len, uint32_t& cp) const {
    unsigned c = s_[i];
    if (c < 0x80) {
      len = 1;
      cp = c;
      return kStage2[c];  // block 0 of the table is U+0000..U+00FF
    }
    len = decode_utf8(s_, n_, i, cp);
    return flags(cp);
  }

  template <typename Pred>
  size_t run(size_t e, Pred pred) const {
    while (e < n_) {
      int len;
      uint32_t cp;
      if (!pred(at(e, len, cp))) break;
      e += len;
    }
    return e;
  }

  // Alternatives 2 (`P?U*L+C?`, lower_required) and 3 (`P?U+L*C?`); 0 when they do not match.
  size_t letters(size_t p, uint8_t f0, uint32_t cp0, int len0, bool lower_required) const {
    const bool prefix_ok = cp0 != '\r' && cp0 != '\n' && !(f0 & (kLetter | kNum));
    for (int with_prefix = 1; with_prefix >= 0; --with_prefix) {
      if (with_prefix && !prefix_ok) continue;
      const size_t q = with_prefix ? p + len0 : p;
      size_t e = q, last_lower_end = 0;
      uint8_t f = 0;
      int len = 0;
      uint32_t cp;
      while (e < n_) {  // greedy U*
        f = at(e, len, cp);
        if (!is_upper(f)) break;
        if (is_lower(f)) last_lower_end = e + len;
        e += len;
      }
      const bool next_lower = e < n_ && is_lower(f);
      if (lower_required) {
        if (next_lower) {
          e = run(e, is_lower);
        } else if (last_lower_end) {
          e = last_lower_end;  // U* gives back its last L-class character to L+
        } else {
          continue;
        }
      } else {
        if (e == q) continue;
        if (next_lower) e = run(e, is_lower);
      }
      return contraction(e);
    }
    return 0;
  }

  // (?i:'s|'t|'re|'ve|'m|'ll|'d)? — case-insensitive with Unicode simple folding ('ſ' folds to s).
  size_t contraction(size_t e) const {
    if (e + 1 >= n_ || s_[e] != '\'') return e;
    const unsigned c = s_[e + 1];
    const unsigned lc = c | 0x20;
    if (c < 0x80 && (lc == 's' || lc == 't' || lc == 'm' || lc == 'd')) return e + 2;
    if (c < 0x80 && (lc == 'r' || lc == 'v') && e + 2 < n_ && (s_[e + 2] | 0x20) == 'e') return e + 3;
    if (c < 0x80 && lc == 'l' && e + 2 < n_ && (s_[e + 2] | 0x20) == 'l') return e + 3;
    if (c == 0xC5 && e + 2 < n_ && s_[e + 2] == 0xBF) return e + 3;  // U+017F
    return e;
  }

  const unsigned char* s_;
  size_t n_;
};

}  // namespace

size_t kimi_piece_end(std::string_view text, size_t pos) { return Splitter(text).piece_end(pos); }

void kimi_split(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) {
  Splitter sp(text);
  for (size_t p = 0; p < text.size();) {
    size_t e = sp.piece_end(p);
    out.emplace_back(p, e);
    p = e;
  }
}

std::vector<size_t> qkt_slice_starts(std::string_view text) {
  constexpr size_t kMaxChars = 400000, kMaxRun = 25000;
  if (text.empty()) return {};
  if (text.size() <= kMaxRun) return {0};  // fewer code points than bytes: nothing to cut
  std::vector<size_t> starts;
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  size_t i = 0;
  while (i < text.size()) {  // one 400,000-code-point window per iteration
    starts.push_back(i);
    size_t chars = 0, run = 0;
    bool run_is_space = false;
    while (i < text.size() && chars < kMaxChars) {
      uint32_t cp = s[i];
      int len = 1;
      if (cp >= 0x80) len = decode_utf8(s, text.size(), i, cp);
      const bool space = (flags(cp) & kPySpace) != 0;
      if (chars == 0) run_is_space = space;
      if (space != run_is_space) {
        run = 1;
        run_is_space = space;
      } else if (++run > kMaxRun) {
        starts.push_back(i);
        run = 1;
      }
      i += size_t(len);
      ++chars;
    }
  }
  return starts;
}

std::vector<size_t> safe_cut_points(std::string_view text, size_t spacing) {
  std::vector<size_t> cuts;
  size_t next = spacing;
  while (next < text.size()) {
    size_t nl = text.find('\n', next);
    if (nl == std::string_view::npos || nl + 1 >= text.size()) break;
    uint32_t cp;
    const auto* s = reinterpret_cast<const unsigned char*>(text.data());
    unicode::decode_utf8(s, text.size(), nl + 1, cp);
    if (unicode::flags(cp) & unicode::kSpace) {
      next = nl + 1;
      continue;
    }
    cuts.push_back(nl + 1);
    next = nl + 1 + spacing;
  }
  return cuts;
}

}  // namespace ds
