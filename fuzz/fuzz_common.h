// Helpers the libFuzzer targets share: the tiny fixture's tokenizer, loaded once, and a way to
// stop with a message when a property fails (libFuzzer records the input as a crash).
#pragma once
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "tokenizer/tokenizer.h"

namespace ds::fuzz {

inline std::shared_ptr<const Tokenizer> tiny_tokenizer() {
  static const std::shared_ptr<const Tokenizer> tok = Tokenizer::from_dir(std::string(DS_FIXTURES_DIR) + "/tiny/tokenizer");
  return tok;
}

[[noreturn]] inline void finding(const std::string& what) {
  std::fprintf(stderr, "FUZZ FINDING: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace ds::fuzz
