#include "bench/sse.h"

namespace ds::bench {

void SseParser::feed(std::string_view bytes, const Callback& on_event) {
  for (char c : bytes) {
    if (after_cr_) {
      after_cr_ = false;
      if (c == '\n') continue;  // the \n of a \r\n pair
    }
    if (c == '\r' || c == '\n') {
      after_cr_ = c == '\r';
      line(partial_, on_event);
      partial_.clear();
    } else {
      partial_.push_back(c);
    }
  }
}

void SseParser::finish(const Callback& on_event) {
  if (!partial_.empty()) {
    line(partial_, on_event);
    partial_.clear();
  }
  if (has_data_) dispatch(on_event);
}

void SseParser::line(std::string_view l, const Callback& on_event) {
  if (l.empty()) {
    dispatch(on_event);
    return;
  }
  if (l.front() == ':') return;  // comment / keep-alive
  const size_t colon = l.find(':');
  std::string_view field = l.substr(0, colon);
  std::string_view value = colon == std::string_view::npos ? std::string_view{} : l.substr(colon + 1);
  if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  if (field == "data") {
    if (has_data_) data_.push_back('\n');
    data_.append(value);
    has_data_ = true;
  } else if (field == "event") {
    event_.assign(value);
  }  // id, retry and unknown fields are irrelevant here
}

void SseParser::dispatch(const Callback& on_event) {
  if (has_data_) on_event(SseEvent{event_, data_});
  event_.clear();
  data_.clear();
  has_data_ = false;
}

}  // namespace ds::bench
