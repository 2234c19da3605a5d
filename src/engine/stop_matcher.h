// Stop strings on streamed text. Text is released only when no suffix of it could be the start of
// a stop string, so a stop string split over several tokens is still found, and nothing past it is
// ever emitted. Matching is on bytes of the detokenized text; the earliest occurrence wins (equal
// positions: the longer string).
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace ds {

class StopStringMatcher {
 public:
  // Empty strings are ignored. include_stop: the matched string is part of the released text.
  StopStringMatcher(std::vector<std::string> stops, bool include_stop);

  struct Result {
    std::string text;     // safe to emit now
    bool stopped = false; // a stop string completed; `text` ends at it (or after it)
    std::string stop;     // which one
  };
  // Adds new text. After a stop, further input is ignored.
  Result push(std::string_view delta);
  // End of the stream: everything still held back (it cannot complete a stop string any more).
  std::string flush();
  bool stopped() const { return stopped_; }
  bool empty() const { return stops_.empty(); }

 private:
  std::vector<std::string> stops_;
  bool include_stop_;
  bool stopped_ = false;
  std::string held_;  // text not yet released; a stop string can only start inside it
};

}  // namespace ds
