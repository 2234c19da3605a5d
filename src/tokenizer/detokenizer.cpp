#include "tokenizer/detokenizer.h"

#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode_props.h"

namespace ds {

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tok, bool skip_special)
    : tok_(tok), skip_special_(skip_special) {}

std::string IncrementalDetokenizer::push(int32_t id) {
  const std::string& bytes = tok_.token_bytes(id);  // throws on a bad id
  if (skip_special_ && tok_.is_special(id)) return "";
  pending_ += bytes;
  std::string out;
  size_t used = unicode::utf8_replace_invalid(pending_, out, /*hold_incomplete=*/true);
  pending_.erase(0, used);
  return out;
}

std::string IncrementalDetokenizer::flush() {
  std::string out;
  unicode::utf8_replace_invalid(pending_, out);
  pending_.clear();
  return out;
}

}  // namespace ds
