// Unicode properties the tokenizer needs, from generated tables (src/tokenizer/unicode_tables.cpp,
// made by tools/gen_unicode_tables.py from Debian's unicode-data; no ICU/PCRE2 at build or run time).
// One flags byte per code point: the general-category groups and scripts that Kimi's pre-tokenizer
// pattern names, the regex `\s` (White_Space) and Python's str.isspace() (used by QK-T's chunking
// and by the chat template's strip/split). Also UTF-8 decoding helpers shared by the tokenizer.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace ds::unicode {

enum Flag : uint8_t {
  kLuLt = 1 << 0,     // Lu, Lt
  kLl = 1 << 1,       // Ll
  kLmLo = 1 << 2,     // Lm, Lo
  kMark = 1 << 3,     // Mn, Mc, Me
  kNum = 1 << 4,      // Nd, Nl, No
  kHan = 1 << 5,      // Script=Han
  kSpace = 1 << 6,    // White_Space (regex \s)
  kPySpace = 1 << 7,  // Python str.isspace()
};
constexpr uint8_t kLetter = kLuLt | kLl | kLmLo;

extern const char* const kUnicodeVersion;
extern const uint8_t kStage1[0x1100];
extern const uint8_t kStage2[];

inline uint8_t flags(uint32_t cp) {
  if (cp >= 0x110000) return 0;
  return kStage2[size_t(kStage1[cp >> 8]) * 256 + (cp & 255)];
}

// Decodes one code point at s[i] (i < n). Returns the sequence length (1..4). An ill-formed
// sequence yields cp = 0xFFFD and length 1 (the offending byte alone), so every byte is consumed.
inline int decode_utf8(const unsigned char* s, size_t n, size_t i, uint32_t& cp) {
  unsigned c = s[i];
  if (c < 0x80) {
    cp = c;
    return 1;
  }
  int len;
  uint32_t v;
  unsigned lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2, v = c & 0x1F;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3, v = c & 0x0F;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4, v = c & 0x07;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    cp = 0xFFFD;
    return 1;
  }
  if (i + len > n) {
    cp = 0xFFFD;
    return 1;
  }
  for (int k = 1; k < len; ++k) {
    unsigned b = s[i + k];
    if (b < lo || b > hi) {
      cp = 0xFFFD;
      return 1;
    }
    lo = 0x80, hi = 0xBF;
    v = (v << 6) | (b & 0x3F);
  }
  cp = v;
  return len;
}

inline void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(char(cp));
  } else if (cp < 0x800) {
    out.push_back(char(0xC0 | (cp >> 6)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(char(0xE0 | (cp >> 12)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(char(0xF0 | (cp >> 18)));
    out.push_back(char(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  }
}

// Bytes → valid UTF-8, replacing each maximal ill-formed subpart by U+FFFD (Python's
// bytes.decode("utf-8", errors="replace")). When `hold_incomplete` is set, a trailing sequence
// that is a valid but unfinished prefix of a character is not consumed: the number of bytes
// consumed is returned, so a streaming caller keeps the rest.
size_t utf8_replace_invalid(std::string_view bytes, std::string& out, bool hold_incomplete = false);

// Number of code points in valid UTF-8 (each ill-formed byte counts as one).
size_t utf8_length(std::string_view s);

}  // namespace ds::unicode
