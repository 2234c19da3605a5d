// Streaming detokenizer: token ids in, UTF-8 text out, never splitting a character. Bytes of a
// character that is still incomplete are held back; bytes that can never form a character are
// replaced by U+FFFD as soon as that is certain. The concatenation of every push() and flush()
// equals Tokenizer::decode() of all the ids (same skip_special).
#pragma once
#include <cstdint>
#include <string>

namespace ds {

class Tokenizer;

class IncrementalDetokenizer {
 public:
  IncrementalDetokenizer(const Tokenizer& tok, bool skip_special);
  std::string push(int32_t id);  // newly complete UTF-8 text (may be empty)
  std::string flush();           // whatever is pending (invalid bytes → U+FFFD)
  size_t pending_bytes() const { return pending_.size(); }

 private:
  const Tokenizer& tok_;
  bool skip_special_;
  std::string pending_;  // at most 3 bytes: an unfinished character
};

}  // namespace ds
