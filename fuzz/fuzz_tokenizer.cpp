// Arbitrary bytes through the tiny fixture's tokenizer. Properties:
// - encode then decode_bytes gives the input back, with special-token text taken as specials and as
//   plain text (byte-level BPE loses nothing); every id is in the vocabulary;
// - decode is decode_bytes made valid UTF-8, and its output is valid UTF-8;
// - the streaming detokenizer, fed one id at a time, produces exactly decode.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz/fuzz_common.h"
#include "tokenizer/detokenizer.h"
#include "tokenizer/unicode_props.h"

namespace {

using namespace ds;

void check(const Tokenizer& tok, std::string_view text, bool allow_special) {
  const char* mode = allow_special ? "with specials" : "as plain text";
  std::vector<int32_t> ids = tok.encode(text, allow_special);
  for (int32_t id : ids)
    if (!tok.is_valid(id)) fuzz::finding(std::string("encode ") + mode + " gave id " + std::to_string(id));
  if (!allow_special)
    for (int32_t id : ids)
      if (id >= tok.num_base_tokens()) fuzz::finding("encode as plain text gave the special id " + std::to_string(id));
  if (tok.decode_bytes(ids) != text) fuzz::finding(std::string("decode_bytes(encode ") + mode + ") differs from the input");

  const std::string text_out = tok.decode(ids);
  std::string expect;
  unicode::utf8_replace_invalid(tok.decode_bytes(ids), expect);
  if (text_out != expect) fuzz::finding("decode is not decode_bytes made valid UTF-8");
  std::string again;
  unicode::utf8_replace_invalid(text_out, again);
  if (again != text_out) fuzz::finding("decode gave invalid UTF-8");

  IncrementalDetokenizer detok(tok, /*skip_special=*/false);
  std::string streamed;
  for (int32_t id : ids) streamed += detok.push(id);
  streamed += detok.flush();
  if (streamed != text_out) fuzz::finding("the streaming detokenizer differs from decode");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static auto tok = fuzz::tiny_tokenizer();
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  check(*tok, text, /*allow_special=*/true);
  check(*tok, text, /*allow_special=*/false);
  return 0;
}
