// Incremental parser for Server-Sent Events (text/event-stream) as OpenAI-compatible servers stream them.
// Bytes arrive in arbitrary pieces; each complete event (ended by a blank line) is handed to the callback
// with its `event:` name and its `data:` lines joined by '\n'. Lines end in \n, \r\n or \r; lines starting
// with ':' are comments; one space after the field colon is dropped (WHATWG HTML, "Server-sent events").
#pragma once
#include <functional>
#include <string>
#include <string_view>

namespace ds::bench {

struct SseEvent {
  std::string event;  // "" when the event had no `event:` field
  std::string data;
};

class SseParser {
 public:
  using Callback = std::function<void(const SseEvent&)>;

  // Parses `bytes`, calling on_event for every event completed by them.
  void feed(std::string_view bytes, const Callback& on_event);
  // End of stream: dispatches a last event that lacked its blank line (servers that close right after
  // `data: [DONE]`); a partial line is treated as complete.
  void finish(const Callback& on_event);

 private:
  void line(std::string_view l, const Callback& on_event);
  void dispatch(const Callback& on_event);

  std::string partial_;    // bytes of the current, unterminated line
  bool after_cr_ = false;  // the last byte seen was '\r' (a following '\n' belongs to it)
  std::string event_, data_;
  bool has_data_ = false;
};

}  // namespace ds::bench
