// Regular expressions → grammar expressions. Syntax (a common subset of ECMAScript / Python re): literals
// (UTF-8), '.', classes [...] with ranges and negation, escapes \d \D \w \W \s \S \n \r \t \f \v \0 \xHH
// \uHHHH \u{H...} and escaped punctuation, groups ( ), (?: ), (?<name> ), (?P<name> ), alternation |,
// quantifiers * + ? {n} {n,} {n,m} (a trailing ? or + — lazy, possessive — is accepted and changes nothing:
// the grammar accepts the same strings), ^ at the start and $ at the end. Not supported (ds::Error):
// backreferences, lookaround, \b \B, other anchors.
#include <algorithm>

#include <fmt/format.h>

#include "core/error.h"
#include "grammar/frontends.h"

namespace ds {
namespace {

using Expr = GrammarBuilder::Expr;
using Ranges = std::vector<std::pair<uint32_t, uint32_t>>;  // code point ranges, inclusive
constexpr uint32_t kMaxCp = 0x10FFFF;

Ranges normalize(Ranges r) {
  std::sort(r.begin(), r.end());
  Ranges out;
  for (auto [lo, hi] : r) {
    if (!out.empty() && lo <= out.back().second + 1) out.back().second = std::max(out.back().second, hi);
    else out.emplace_back(lo, hi);
  }
  return out;
}

Ranges complement(const Ranges& r0) {
  Ranges r = normalize(r0), out;
  uint32_t next = 0;
  for (auto [lo, hi] : r) {
    if (lo > next) out.emplace_back(next, lo - 1);
    next = hi + 1;
  }
  if (next <= kMaxCp) out.emplace_back(next, kMaxCp);
  return out;
}

Ranges digit() { return {{'0', '9'}}; }
Ranges word() { return {{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}}; }
Ranges space() { return {{'\t', '\r'}, {' ', ' '}}; }

struct RegexParser {
  GrammarBuilder& b;
  std::string_view s;
  bool json;
  size_t i = 0;

  [[noreturn]] void error(const std::string& what) { fail("regex: {} at offset {} in '{}'", what, i, s); }
  bool eof() const { return i >= s.size(); }
  char peek() const { return s[i]; }

  uint32_t utf8_cp() {
    const auto c = uint8_t(s[i]);
    int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + size_t(n) > s.size()) error("invalid UTF-8");
    uint32_t cp = n == 1 ? c : c & (0x3F >> (n - 1));
    for (int k = 1; k < n; ++k) cp = (cp << 6) | (uint8_t(s[i + size_t(k)]) & 0x3F);
    i += size_t(n);
    return cp;
  }

  uint32_t hex(size_t n) {
    if (i + n > s.size()) error("short hex escape");
    uint32_t v = 0;
    for (size_t k = 0; k < n; ++k) {
      const char c = s[i++];
      v = v * 16 + uint32_t(c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                            : c >= 'A' && c <= 'F' ? c - 'A' + 10 : (error("bad hex digit"), 0));
    }
    return v;
  }

  // After a backslash: a class (digit/word/space) or a single code point.
  Ranges escape() {
    if (eof()) error("trailing backslash");
    const char c = s[i++];
    switch (c) {
      case 'd': return digit();
      case 'D': return complement(digit());
      case 'w': return word();
      case 'W': return complement(word());
      case 's': return space();
      case 'S': return complement(space());
      case 'n': return {{'\n', '\n'}};
      case 'r': return {{'\r', '\r'}};
      case 't': return {{'\t', '\t'}};
      case 'f': return {{'\f', '\f'}};
      case 'v': return {{'\v', '\v'}};
      case '0': return {{0, 0}};
      case 'x': { const uint32_t v = hex(2); return {{v, v}}; }
      case 'u': {
        if (!eof() && peek() == '{') {
          ++i;
          uint32_t v = 0;
          while (!eof() && peek() != '}') { v = v * 16 + hex(1); if (v > kMaxCp) error("code point out of range"); }
          if (eof()) error("unterminated \\u{");
          ++i;
          return {{v, v}};
        }
        const uint32_t v = hex(4);
        return {{v, v}};
      }
      case 'b': case 'B': case 'A': case 'z': case 'Z': case 'G': error(fmt::format("unsupported anchor \\{}", c));
      default:
        if (c >= '1' && c <= '9') error("backreferences are not supported");
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) error(fmt::format("unknown escape \\{}", c));
        return {{uint32_t(uint8_t(c)), uint32_t(uint8_t(c))}};
    }
  }

  Ranges char_class() {  // after '['
    bool neg = false;
    if (!eof() && peek() == '^') { neg = true; ++i; }
    Ranges r;
    bool first = true;
    while (true) {
      if (eof()) error("unterminated character class");
      if (peek() == ']' && !first) { ++i; break; }
      first = false;
      Ranges lo;
      if (peek() == '\\') { ++i; lo = escape(); }
      else if (peek() == '[' && i + 1 < s.size() && s[i + 1] == ':') error("POSIX classes are not supported");
      else { const uint32_t cp = utf8_cp(); lo = {{cp, cp}}; }
      if (lo.size() == 1 && lo[0].first == lo[0].second && i + 1 < s.size() && peek() == '-' && s[i + 1] != ']') {
        ++i;
        Ranges hi;
        if (peek() == '\\') { ++i; hi = escape(); } else { const uint32_t cp = utf8_cp(); hi = {{cp, cp}}; }
        if (hi.size() != 1 || hi[0].first != hi[0].second || hi[0].first < lo[0].first) error("bad range in class");
        r.emplace_back(lo[0].first, hi[0].first);
      } else {
        r.insert(r.end(), lo.begin(), lo.end());
      }
    }
    return neg ? complement(r) : normalize(r);
  }

  // The code points of a set as bytes; inside a JSON string those that JSON escapes become escapes.
  Expr emit(const Ranges& r0) {
    const Ranges r = normalize(r0);
    ByteSet ascii;
    std::vector<Expr> alts;
    for (auto [lo, hi] : r) {
      for (uint32_t c = lo; c <= std::min<uint32_t>(hi, 0x7F); ++c) {
        if (json && (c < 0x20 || c == '"' || c == '\\')) {
          static const char* named[] = {"\\b", "\\t", "\\n", nullptr, "\\f", "\\r"};
          std::string esc = c == '"' ? "\\\"" : c == '\\' ? "\\\\"
                            : (c >= 8 && c <= 13 && named[c - 8]) ? named[c - 8] : fmt::format("\\u{:04x}", c);
          alts.push_back(b.literal(esc));
        } else {
          ascii.set(c);
        }
      }
      if (hi >= 0x80) alts.push_back(utf8_range(b, std::max<uint32_t>(lo, 0x80), hi));
    }
    if (ascii.any()) alts.insert(alts.begin(), b.bytes(ascii));
    if (alts.empty()) return b.bytes(ByteSet());
    return b.alt(std::move(alts));
  }

  Expr alternation() {
    std::vector<Expr> alts{concat()};
    while (!eof() && peek() == '|') { ++i; alts.push_back(concat()); }
    return b.alt(std::move(alts));
  }

  Expr concat() {
    std::vector<Expr> items;
    while (!eof() && peek() != '|' && peek() != ')') {
      Expr a = atom();
      items.push_back(quantified(a));
    }
    return items.empty() ? b.empty() : b.seq(std::move(items));
  }

  int number() {
    int v = 0;
    bool any = false;
    while (!eof() && peek() >= '0' && peek() <= '9') {
      v = v * 10 + (peek() - '0');
      if (v > 100000) error("repetition count too large");
      ++i;
      any = true;
    }
    return any ? v : -1;
  }

  Expr quantified(Expr a) {
    while (!eof()) {
      const char c = peek();
      int lo, hi;
      if (c == '*') { lo = 0; hi = -1; ++i; }
      else if (c == '+') { lo = 1; hi = -1; ++i; }
      else if (c == '?') { lo = 0; hi = 1; ++i; }
      else if (c == '{') {
        const size_t save = i++;
        lo = number();
        if (lo < 0) { i = save; return a; }  // a literal '{' follows
        hi = lo;
        if (!eof() && peek() == ',') { ++i; hi = number(); }
        if (eof() || peek() != '}') error("bad {m,n} quantifier");
        ++i;
        if (hi >= 0 && hi < lo) error("{m,n} with n < m");
      } else {
        return a;
      }
      if (!eof() && (peek() == '?' || peek() == '+')) ++i;  // lazy / possessive: same language
      a = b.repeat(a, lo, hi);
    }
    return a;
  }

  Expr atom() {
    const char c = peek();
    if (c == '(') {
      ++i;
      if (!eof() && peek() == '?') {
        ++i;
        if (!eof() && peek() == ':') ++i;
        else if (!eof() && (peek() == '<' || peek() == 'P')) {
          if (peek() == 'P') ++i;
          if (eof() || peek() != '<') error("bad group");
          if (i + 1 < s.size() && (s[i + 1] == '=' || s[i + 1] == '!')) error("lookbehind is not supported");
          while (!eof() && peek() != '>') ++i;
          if (eof()) error("bad group name");
          ++i;
        } else {
          error("lookaround and inline flags are not supported");
        }
      }
      const Expr e = alternation();
      if (eof() || peek() != ')') error("missing )");
      ++i;
      return e;
    }
    if (c == '[') { ++i; return emit(char_class()); }
    if (c == '.') { ++i; return emit(complement({{'\n', '\n'}})); }
    if (c == '\\') { ++i; return emit(escape()); }
    if (c == '^' || c == '$') {
      const bool ok = c == '^' ? i == 0 : i + 1 == s.size();
      if (!ok) error(fmt::format("anchor '{}' inside the pattern is not supported", c));
      ++i;
      return b.empty();
    }
    if (c == '*' || c == '+' || c == '?') error("nothing to repeat");
    const uint32_t cp = utf8_cp();
    return emit({{cp, cp}});
  }
};

}  // namespace

GrammarBuilder::Expr regex_expr(GrammarBuilder& b, std::string_view pattern, bool json_string) {
  RegexParser p{b, pattern, json_string};
  const Expr e = p.alternation();
  if (!p.eof()) p.error("unbalanced )");
  return e;
}

}  // namespace ds
