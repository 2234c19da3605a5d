#include "tokenizer/tool_parser.h"

#include <algorithm>
#include <cctype>
#include <cstdint>

namespace ds {
namespace {

constexpr std::string_view kSectionBegin = "<|tool_calls_section_begin|>";
constexpr std::string_view kSectionBeginAlt = "<|tool_call_section_begin|>";
constexpr std::string_view kSectionEnd = "<|tool_calls_section_end|>";
constexpr std::string_view kSectionEndAlt = "<|tool_call_section_end|>";
constexpr std::string_view kCallBegin = "<|tool_call_begin|>";
constexpr std::string_view kArgBegin = "<|tool_call_argument_begin|>";
constexpr std::string_view kCallEnd = "<|tool_call_end|>";

constexpr std::string_view kMarkers[] = {kSectionBegin, kSectionBeginAlt, kSectionEnd, kSectionEndAlt,
                                         kCallBegin, kArgBegin, kCallEnd};

// The marker that starts at buf[pos], if any.
std::string_view marker_at(const std::string& buf, size_t pos) {
  for (std::string_view m : kMarkers)
    if (buf.compare(pos, m.size(), m) == 0) return m;
  return {};
}

// True when buf[pos..] is a proper prefix of some marker (more text could complete it).
bool partial_marker_at(const std::string& buf, size_t pos) {
  std::string_view rest(buf.data() + pos, buf.size() - pos);
  for (std::string_view m : kMarkers)
    if (rest.size() < m.size() && m.substr(0, rest.size()) == rest) return true;
  return false;
}

// First position >= from where a marker starts or might start (partially, at the end); npos if
// none. `partial` tells which.
size_t next_marker(const std::string& buf, size_t from, bool& partial) {
  for (size_t p = buf.find('<', from); p != std::string::npos; p = buf.find('<', p + 1)) {
    if (!marker_at(buf, p).empty()) {
      partial = false;
      return p;
    }
    if (partial_marker_at(buf, p)) {
      partial = true;
      return p;
    }
  }
  return std::string::npos;
}

std::string trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(uint8_t(s[b]))) ++b;
  while (e > b && std::isspace(uint8_t(s[e - 1]))) --e;
  return std::string(s.substr(b, e - b));
}

bool is_section_begin(std::string_view m) { return m == kSectionBegin || m == kSectionBeginAlt; }
bool is_section_end(std::string_view m) { return m == kSectionEnd || m == kSectionEndAlt; }

}  // namespace

std::string ToolCallParser::name_from_id(std::string_view id) {
  std::string s = trim(id);
  if (s.rfind("functions.", 0) == 0) s.erase(0, 10);
  size_t colon = s.rfind(':');
  if (colon != std::string::npos && colon + 1 < s.size() &&
      std::all_of(s.begin() + long(colon) + 1, s.end(), [](char c) { return std::isdigit(uint8_t(c)); }))
    s.erase(colon);
  return s;
}

bool ToolCallParser::has_tool_calls(std::string_view text) {
  return text.find(kSectionBegin) != std::string_view::npos ||
         text.find(kSectionBeginAlt) != std::string_view::npos ||
         text.find(kCallBegin) != std::string_view::npos;
}

ToolParseDelta ToolCallParser::push(std::string_view text) {
  buf_.append(text);
  ToolParseDelta out;
  run(out, false);
  return out;
}

ToolParseDelta ToolCallParser::finish() {
  ToolParseDelta out;
  run(out, true);
  buf_.clear();
  return out;
}

void ToolCallParser::run(ToolParseDelta& out, bool final) {
  size_t pos = 0;  // consumed prefix of buf_
  for (;;) {
    bool partial = false;
    size_t at = next_marker(buf_, pos, partial);
    if (state_ == State::Content || state_ == State::Args) {
      // Text up to the next (possible) marker is payload: content or argument text.
      size_t end = at == std::string::npos ? buf_.size() : at;
      if (partial && final) end = buf_.size();  // the output ended: it was not a marker
      std::string payload = buf_.substr(pos, end - pos);
      if (!payload.empty()) {
        if (state_ == State::Content) {
          out.content += payload;
        } else if (skip_call_) {
          // arguments of a call without a name: dropped with it
        } else if (!out.calls.empty() && out.calls.back().index == index_) {
          out.calls.back().arguments += payload;
        } else {
          out.calls.push_back({index_, "", "", payload});
        }
      }
      pos = end;
      if (at == std::string::npos || partial) break;
      std::string_view m = marker_at(buf_, at);
      pos = at + m.size();
      if (state_ == State::Content) {
        if (is_section_begin(m)) state_ = State::Section;
        else if (m == kCallBegin) state_ = State::Header;  // a call without a section
        // other markers out of place are dropped
      } else if (m == kCallEnd || is_section_end(m) || m == kCallBegin) {
        // The call ends (a call_begin here means its call_end is missing: the next call starts).
        if (!skip_call_) ++index_;
        skip_call_ = false;
        state_ = m == kCallEnd ? State::Section : m == kCallBegin ? State::Header : State::Content;
      }
      continue;
    }
    if (at == std::string::npos || partial) {
      if (state_ == State::Section) pos = at == std::string::npos ? buf_.size() : at;  // drop filler
      break;
    }
    std::string_view m = marker_at(buf_, at);
    if (state_ == State::Section) {
      pos = at + m.size();
      if (m == kCallBegin) state_ = State::Header;
      else if (is_section_end(m)) state_ = State::Content;
      continue;
    }
    // Header: the call id runs up to the argument marker. A call without a function name is
    // dropped (with its arguments): a tool call always reaches the client with its id and name.
    std::string id = trim(std::string_view(buf_).substr(pos, at - pos));
    std::string name = name_from_id(id);
    pos = at + m.size();
    if (m == kArgBegin) {
      skip_call_ = name.empty();
      if (!skip_call_) out.calls.push_back({index_, id, name, ""});
      state_ = State::Args;
    } else if (m == kCallEnd) {  // a call without arguments
      if (!name.empty()) {
        out.calls.push_back({index_, id, name, ""});
        ++index_;
      }
      state_ = State::Section;
    } else if (is_section_end(m)) {
      state_ = State::Content;
    }
  }
  buf_.erase(0, pos);
}

ToolParseResult ToolCallParser::parse(std::string_view full_text) {
  ToolCallParser p;
  ToolParseResult r;
  auto absorb = [&](const ToolParseDelta& d) {
    r.content += d.content;
    for (const ToolCallDelta& c : d.calls) {
      if (size_t(c.index) >= r.calls.size()) r.calls.resize(size_t(c.index) + 1);
      ToolCall& t = r.calls[size_t(c.index)];
      if (!c.id.empty()) t.id = c.id;
      if (!c.name.empty()) t.name = c.name;
      t.arguments += c.arguments;
    }
  };
  absorb(p.push(full_text));
  absorb(p.finish());
  return r;
}

}  // namespace ds
