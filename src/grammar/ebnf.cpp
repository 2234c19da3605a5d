// The EBNF dialect (GBNF-like, as llama.cpp's grammars look; our own parser):
//   rule     ::= NAME "::=" alternatives          (one per definition; the start rule is `root`)
//   element  := "text" | 'text'                    (escapes \n \r \t \\ \" \' \xHH \uHHHH)
//             | [a-z0-9_] | [^"\\]                 (character classes as in regex/regex.cpp)
//             | .                                  (any character)
//             | NAME | ( alternatives )
//             | <|special|>                        (one special token, by its name)
//   postfix  := * | + | ? | {m} | {m,} | {m,n}
// Alternatives are separated by |, a sequence is whitespace-separated; newlines are whitespace (a
// rule ends where the next "NAME ::=" starts); # starts a comment to the end of the line.
#include <set>

#include <fmt/format.h>

#include "core/error.h"
#include "grammar/frontends.h"

namespace ds {
namespace {

using Expr = GrammarBuilder::Expr;

bool name_char(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.'; }

struct EbnfParser {
  GrammarBuilder& b;
  std::string_view s;
  size_t i = 0;
  std::set<std::string> defined;

  [[noreturn]] void error(const std::string& what) {
    size_t line = 1;
    for (size_t k = 0; k < i && k < s.size(); ++k) line += s[k] == '\n';
    fail("grammar: {} (line {})", what, line);
  }
  void skip() {
    while (i < s.size()) {
      if (s[i] == '#') {
        while (i < s.size() && s[i] != '\n') ++i;
      } else if (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
        ++i;
      } else {
        break;
      }
    }
  }
  bool eof() { skip(); return i >= s.size(); }
  std::string name() {
    const size_t st = i;
    while (i < s.size() && name_char(s[i])) ++i;
    if (i == st) error("expected a rule name");
    return std::string(s.substr(st, i - st));
  }
  // NAME followed by ::= (the start of the next rule)?
  bool at_definition() {
    skip();
    size_t k = i;
    while (k < s.size() && name_char(s[k])) ++k;
    if (k == i) return false;
    while (k < s.size() && (s[k] == ' ' || s[k] == '\t')) ++k;
    return s.substr(k, 3) == "::=";
  }

  void parse() {
    while (!eof()) {
      const std::string n = name();
      skip();
      if (s.substr(i, 3) != "::=") error(fmt::format("expected ::= after '{}'", n));
      i += 3;
      const int r = b.rule(n);
      const Expr body = alternatives();
      if (!defined.insert(n).second) error(fmt::format("rule '{}' is defined twice", n));
      b.define(r, body);
    }
  }

  Expr alternatives() {
    std::vector<Expr> alts{sequence()};
    while (!eof() && s[i] == '|') {
      ++i;
      alts.push_back(sequence());
    }
    return b.alt(std::move(alts));
  }

  Expr sequence() {
    std::vector<Expr> items;
    while (!eof() && s[i] != '|' && s[i] != ')' && !at_definition()) items.push_back(postfix(element()));
    return items.empty() ? b.empty() : b.seq(std::move(items));
  }

  int number() {
    int v = 0;
    const size_t st = i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
      v = v * 10 + (s[i++] - '0');
      if (v > 100000) error("repetition count too large");
    }
    return i == st ? -1 : v;
  }

  Expr postfix(Expr e) {
    while (true) {
      while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
      if (i >= s.size()) break;
      const char c = s[i];
      if (c == '*') { ++i; e = b.star(e); }
      else if (c == '+') { ++i; e = b.plus(e); }
      else if (c == '?') { ++i; e = b.opt(e); }
      else if (c == '{') {
        ++i;
        skip();
        const int lo = number();
        if (lo < 0) error("bad {m,n}");
        int hi = lo;
        skip();
        if (i < s.size() && s[i] == ',') { ++i; skip(); hi = number(); skip(); }
        if (i >= s.size() || s[i] != '}') error("bad {m,n}");
        ++i;
        if (hi >= 0 && hi < lo) error("{m,n} with n < m");
        e = b.repeat(e, lo, hi);
      } else {
        break;
      }
    }
    return e;
  }

  Expr element() {
    const char c = s[i];
    if (c == '"' || c == '\'') return quoted(c);
    if (c == '(') {
      ++i;
      const Expr e = alternatives();
      if (eof() || s[i] != ')') error("missing )");
      ++i;
      return e;
    }
    if (c == '[' || c == '.') {
      // Reuse the regex front end for one class / any character.
      size_t k = i;
      if (c == '[') {
        ++k;
        if (k < s.size() && s[k] == '^') ++k;
        if (k < s.size() && s[k] == ']') ++k;
        while (k < s.size() && s[k] != ']') k += s[k] == '\\' ? 2 : 1;
        if (k >= s.size()) error("unterminated character class");
      }
      const std::string_view cls = s.substr(i, k - i + 1);
      i = k + 1;
      return regex_expr(b, cls);
    }
    if (c == '<' && s.substr(i, 2) == "<|") {
      const size_t e = s.find("|>", i + 2);
      if (e == std::string_view::npos) error("unterminated <|special|>");
      const std::string sp(s.substr(i, e + 2 - i));
      i = e + 2;
      return b.special(sp);
    }
    if (name_char(c)) return b.ref(b.rule(name()));
    error(fmt::format("unexpected '{}'", c));
  }

  Expr quoted(char q) {
    ++i;
    std::string out;
    while (true) {
      if (i >= s.size()) error("unterminated string");
      char c = s[i++];
      if (c == q) break;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (i >= s.size()) error("unterminated string");
      c = s[i++];
      auto hexv = [&](int n) {
        uint32_t v = 0;
        for (int k = 0; k < n; ++k) {
          if (i >= s.size()) error("short escape");
          const char h = s[i++];
          v = v * 16 + uint32_t(h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10
                                : h >= 'A' && h <= 'F' ? h - 'A' + 10 : (error("bad hex digit"), 0));
        }
        return v;
      };
      switch (c) {
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'x': out += char(hexv(2)); break;
        case 'u': {
          const uint32_t cp = hexv(4);
          if (cp < 0x80) { out += char(cp); }
          else if (cp < 0x800) { out += char(0xC0 | (cp >> 6)); out += char(0x80 | (cp & 0x3F)); }
          else { out += char(0xE0 | (cp >> 12)); out += char(0x80 | ((cp >> 6) & 0x3F)); out += char(0x80 | (cp & 0x3F)); }
          break;
        }
        default: out += c;
      }
    }
    return b.literal(out);
  }
};

}  // namespace

int ebnf_rules(GrammarBuilder& b, std::string_view text) {
  EbnfParser p{b, text, 0, {}};
  p.parse();
  if (!b.has_rule("root")) fail("grammar: no rule named 'root'");
  return b.rule("root");
}

}  // namespace ds
