#include "tokenizer/unicode_props.h"

namespace ds::unicode {

size_t utf8_replace_invalid(std::string_view bytes, std::string& out, bool hold_incomplete) {
  const auto* s = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  size_t i = 0;
  out.reserve(out.size() + n);
  while (i < n) {
    // Copy a run of ASCII at once.
    size_t j = i;
    while (j < n && s[j] < 0x80) ++j;
    out.append(bytes.data() + i, j - i);
    i = j;
    if (i >= n) break;
    unsigned c = s[i];
    int len = 0;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    }
    if (len == 0) {  // a byte that can never start a character
      append_utf8(out, 0xFFFD);
      ++i;
      continue;
    }
    // Count the continuation bytes that keep this a valid prefix (the "maximal subpart").
    int k = 1;
    while (k < len && i + k < n) {
      unsigned b = s[i + k];
      if (b < lo || b > hi) break;
      lo = 0x80, hi = 0xBF;
      ++k;
    }
    if (k == len) {
      out.append(bytes.data() + i, len);
      i += len;
    } else if (i + k == n && hold_incomplete) {
      return i;  // unfinished character at the end: keep it for later
    } else {
      append_utf8(out, 0xFFFD);
      i += k;
    }
  }
  return n;
}

size_t utf8_length(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t count = 0;
  uint32_t cp;
  for (size_t i = 0; i < s.size();) {
    i += size_t(decode_utf8(p, s.size(), i, cp));
    ++count;
  }
  return count;
}

}  // namespace ds::unicode
