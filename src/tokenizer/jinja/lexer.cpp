// Lexer for the Jinja2 subset, following jinja2's lexer rules with Hugging Face's environment
// (trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False).
#include <cctype>

#include "tokenizer/jinja/ast.h"
#include "tokenizer/unicode_props.h"

namespace ds::jinja {
namespace {

// Python str.isspace() on the code point starting at s[i]; sets len.
bool space_at(const std::string& s, size_t i, int& len) {
  uint32_t cp;
  len = unicode::decode_utf8(reinterpret_cast<const unsigned char*>(s.data()), s.size(), i, cp);
  return py_isspace(cp);
}

std::string rstrip_ws(const std::string& s) {
  size_t e = 0, i = 0;  // e: end of the last non-space code point
  while (i < s.size()) {
    int len;
    bool sp = space_at(s, i, len);
    i += size_t(len);
    if (!sp) e = i;
  }
  return s.substr(0, e);
}

size_t skip_ws(const std::string& s, size_t i) {
  while (i < s.size()) {
    int len;
    if (!space_at(s, i, len)) break;
    i += size_t(len);
  }
  return i;
}

int count_lines(const std::string& s, size_t b, size_t e) {
  int n = 0;
  for (size_t i = b; i < e && i < s.size(); ++i) n += s[i] == '\n';
  return n;
}

void append_utf8(std::string& out, uint32_t cp) { unicode::append_utf8(out, cp); }

// Decodes a string literal body the way jinja2 does (Python's unicode-escape codec).
std::string unescape(const std::string& s, int line) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c != '\\' || i + 1 >= s.size()) {
      out += c;
      continue;
    }
    char e = s[++i];
    auto hex = [&](int n) {
      uint32_t v = 0;
      for (int k = 1; k <= n; ++k) {
        char h = i + size_t(k) < s.size() ? s[i + size_t(k)] : 'x';
        if (!std::isxdigit(uint8_t(h))) throw TemplateError(line, "bad escape in string literal");
        v = v * 16 + uint32_t(std::isdigit(uint8_t(h)) ? h - '0' : (std::tolower(h) - 'a' + 10));
      }
      i += size_t(n);
      return v;
    };
    switch (e) {
      case 'n': out += '\n'; break;
      case 't': out += '\t'; break;
      case 'r': out += '\r'; break;
      case '\\': out += '\\'; break;
      case '\'': out += '\''; break;
      case '"': out += '"'; break;
      case 'a': out += '\a'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'v': out += '\v'; break;
      case '\n': break;  // line continuation
      case 'x': append_utf8(out, hex(2)); break;
      case 'u': append_utf8(out, hex(4)); break;
      case 'U': append_utf8(out, hex(8)); break;
      default:
        if (e >= '0' && e <= '7') {
          uint32_t v = uint32_t(e - '0');
          for (int k = 0; k < 2 && i + 1 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '7'; ++k)
            v = v * 8 + uint32_t(s[++i] - '0');
          append_utf8(out, v);
        } else {
          out += '\\';
          out += e;
        }
    }
  }
  return out;
}

class Lexer {
 public:
  explicit Lexer(std::string src) : s_(std::move(src)) {
    // jinja2 normalises newlines and drops one trailing newline (keep_trailing_newline=False).
    std::string norm;
    norm.reserve(s_.size());
    for (size_t i = 0; i < s_.size(); ++i) {
      if (s_[i] == '\r') {
        norm += '\n';
        if (i + 1 < s_.size() && s_[i + 1] == '\n') ++i;
      } else {
        norm += s_[i];
      }
    }
    if (!norm.empty() && norm.back() == '\n') norm.pop_back();
    s_ = std::move(norm);
  }

  std::vector<Token> run() {
    size_t pos = 0;
    bool line_starting = true;
    while (pos < s_.size()) {
      size_t tag = find_tag(pos);
      std::string text = s_.substr(pos, (tag == std::string::npos ? s_.size() : tag) - pos);
      if (tag == std::string::npos) {
        emit(Token::Data, text);
        break;
      }
      const char kind = s_[tag + 1];  // '{', '%' or '#'
      size_t p = tag + 2;
      char sign = 0;
      if (p < s_.size() && (s_[p] == '-' || s_[p] == '+')) sign = s_[p++];
      if (sign == '-') {
        text = rstrip_ws(text);
      } else if (sign != '+' && kind != '{') {  // lstrip_blocks
        size_t l_pos = text.rfind('\n');
        l_pos = l_pos == std::string::npos ? 0 : l_pos + 1;
        if (l_pos > 0 || line_starting) {
          bool blank = l_pos < text.size();
          for (size_t i = l_pos; i < text.size(); ++i) {
            int len;
            if (!space_at(text, i, len) || text[i] == '\n') {
              blank = false;
              break;
            }
          }
          if (blank) text.erase(l_pos);
        }
      }
      if (!text.empty()) emit(Token::Data, text);
      line_ += count_lines(s_, pos, tag);
      if (kind == '#') {
        pos = comment(p);
      } else if (kind == '%' && is_raw(p)) {
        pos = raw(p);
      } else {
        pos = tag_body(p, kind == '%');
      }
      line_starting = pos > 0 && s_[pos - 1] == '\n';
    }
    tokens_.push_back({Token::Eof, "", line_});
    return std::move(tokens_);
  }

 private:
  void emit(Token::Kind k, std::string text) { tokens_.push_back({k, std::move(text), line_}); }

  size_t find_tag(size_t from) const {
    for (size_t i = s_.find('{', from); i != std::string::npos; i = s_.find('{', i + 1))
      if (i + 1 < s_.size() && (s_[i + 1] == '{' || s_[i + 1] == '%' || s_[i + 1] == '#')) return i;
    return std::string::npos;
  }

  // After "{#": skip to "#}" (with "-#}" stripping following space, trim_blocks eating one '\n').
  size_t comment(size_t p) {
    size_t end = s_.find("#}", p);
    if (end == std::string::npos) throw TemplateError(line_, "unclosed comment");
    line_ += count_lines(s_, p, end + 2);
    return after_end(end, 2);
  }

  // Position after a tag end at s_[end] of `len` chars, applying '-', '+' and trim_blocks.
  size_t after_end(size_t end, size_t len) {
    char sign = end > 0 ? s_[end - 1] : 0;
    size_t q = end + len;
    if (sign == '-') {
      size_t r = skip_ws(s_, q);
      line_ += count_lines(s_, q, r);
      return r;
    }
    if (sign != '+' && s_[end] != '}' && q < s_.size() && s_[q] == '\n') {  // trim_blocks
      ++line_;
      return q + 1;
    }
    return q;
  }

  bool is_raw(size_t p) const {
    size_t q = skip_ws(s_, p);
    return s_.compare(q, 3, "raw") == 0 && (q + 3 >= s_.size() || !(std::isalnum(uint8_t(s_[q + 3])) || s_[q + 3] == '_'));
  }

  // {% raw %}...{% endraw %}: the body is data, verbatim.
  size_t raw(size_t p) {
    size_t close = s_.find("%}", p);
    if (close == std::string::npos) throw TemplateError(line_, "unclosed raw tag");
    size_t body = close + 2;  // no trim_blocks after the raw tag (jinja2's raw_begin rule)
    if (s_[close - 1] == '-') body = skip_ws(s_, body);
    line_ += count_lines(s_, p, body);
    for (size_t i = s_.find("{%", body); i != std::string::npos; i = s_.find("{%", i + 2)) {
      size_t q = i + 2;
      char sign = q < s_.size() && (s_[q] == '-' || s_[q] == '+') ? s_[q++] : 0;
      q = skip_ws(s_, q);
      if (s_.compare(q, 6, "endraw") != 0) continue;
      size_t end = s_.find("%}", q);
      if (end == std::string::npos) break;
      std::string text = s_.substr(body, i - body);
      if (sign == '-') text = rstrip_ws(text);
      if (!text.empty()) emit(Token::Data, text);
      line_ += count_lines(s_, body, end);
      return after_end(end, 2);
    }
    throw TemplateError(line_, "missing endraw");
  }

  // Expression tokens up to the tag end ("%}" for blocks, "}}" for variables), brackets balanced.
  size_t tag_body(size_t p, bool block) {
    emit(block ? Token::BlockBegin : Token::VarBegin, "");
    int depth = 0;
    const char closer = block ? '%' : '}';
    for (;;) {
      while (p < s_.size() && std::isspace(uint8_t(s_[p]))) line_ += s_[p++] == '\n';
      if (p >= s_.size()) throw TemplateError(line_, block ? "unclosed block tag" : "unclosed variable tag");
      if (depth == 0) {
        size_t q = p;
        if ((s_[q] == '-' || (block && s_[q] == '+')) && q + 1 < s_.size()) ++q;
        if (s_[q] == closer && q + 1 < s_.size() && s_[q + 1] == '}') {
          emit(block ? Token::BlockEnd : Token::VarEnd, "");
          return after_end(q, 2);
        }
      }
      const char c = s_[p];
      if (std::isdigit(uint8_t(c))) {
        size_t q = p;
        while (q < s_.size() && (std::isdigit(uint8_t(s_[q])) || s_[q] == '_')) ++q;
        bool is_float = false;
        if (q + 1 < s_.size() && s_[q] == '.' && std::isdigit(uint8_t(s_[q + 1]))) {
          is_float = true;
          ++q;
          while (q < s_.size() && (std::isdigit(uint8_t(s_[q])) || s_[q] == '_')) ++q;
        }
        if (q < s_.size() && (s_[q] == 'e' || s_[q] == 'E')) {
          size_t r = q + 1;
          if (r < s_.size() && (s_[r] == '+' || s_[r] == '-')) ++r;
          if (r < s_.size() && std::isdigit(uint8_t(s_[r]))) {
            is_float = true;
            q = r;
            while (q < s_.size() && std::isdigit(uint8_t(s_[q]))) ++q;
          }
        }
        std::string num;
        for (size_t i = p; i < q; ++i)
          if (s_[i] != '_') num += s_[i];
        emit(is_float ? Token::Float : Token::Int, num);
        p = q;
      } else if (std::isalpha(uint8_t(c)) || c == '_') {
        size_t q = p;
        while (q < s_.size() && (std::isalnum(uint8_t(s_[q])) || s_[q] == '_')) ++q;
        emit(Token::Name, s_.substr(p, q - p));
        p = q;
      } else if (c == '\'' || c == '"') {
        size_t q = p + 1;
        const int start_line = line_;
        while (q < s_.size() && s_[q] != c) {
          if (s_[q] == '\\') ++q;
          if (q < s_.size() && s_[q] == '\n') ++line_;
          ++q;
        }
        if (q >= s_.size()) throw TemplateError(start_line, "unterminated string literal");
        tokens_.push_back({Token::String, unescape(s_.substr(p + 1, q - p - 1), start_line), start_line});
        p = q + 1;
      } else {
        static const char* const kOps[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%",
                                           "~", "<", ">", "=", ".", ",", ":", "|", "(", ")", "[", "]",
                                           "{", "}", ";"};
        const char* op = nullptr;
        for (const char* o : kOps)
          if (s_.compare(p, std::char_traits<char>::length(o), o) == 0) {
            op = o;
            break;
          }
        if (!op) throw TemplateError(line_, fmt::format("unexpected character '{}'", c));
        std::string o(op);
        if (o == "(" || o == "[" || o == "{") ++depth;
        if (o == ")" || o == "]" || o == "}") {
          if (depth == 0) throw TemplateError(line_, fmt::format("unexpected '{}'", o));
          --depth;
        }
        emit(Token::Op, o);
        p += o.size();
      }
    }
  }

  std::string s_;
  std::vector<Token> tokens_;
  int line_ = 1;
};

}  // namespace

std::vector<Token> lex(const std::string& source) { return Lexer(source).run(); }

}  // namespace ds::jinja
