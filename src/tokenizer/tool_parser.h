// Parses Kimi's tool-call output into OpenAI tool calls, incrementally:
//   content<|tool_calls_section_begin|><|tool_call_begin|>functions.NAME:IDX<|tool_call_argument_begin|>
//   {json}<|tool_call_end|>...<|tool_calls_section_end|>
// Feed it text deltas decoded WITH special tokens. It emits content deltas and tool-call deltas:
// the first delta of a call carries its id ("functions.NAME:IDX", what the chat template renders
// back) and name; later ones carry argument fragments. Text that might be the start of a marker is
// held back until it is decided, so marker text never leaks into content. Also accepted: the
// singular "<|tool_call_section_begin|>"/"_end|>" spelling, and a call outside a section. A call
// whose header names no function ("", "functions.:0") is dropped, arguments and all.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace ds {

struct ToolCallDelta {
  int index = 0;          // position of the call in this response
  std::string id;         // first delta of a call only
  std::string name;       // first delta of a call only
  std::string arguments;  // argument text fragment (may be empty)
};

struct ToolParseDelta {
  std::string content;
  std::vector<ToolCallDelta> calls;
  bool empty() const { return content.empty() && calls.empty(); }
};

struct ToolCall {
  std::string id, name, arguments;
};

struct ToolParseResult {
  std::string content;
  std::vector<ToolCall> calls;
};

class ToolCallParser {
 public:
  ToolParseDelta push(std::string_view text);  // streaming
  ToolParseDelta finish();                     // end of output: releases held-back text
  static bool has_tool_calls(std::string_view full_text);
  static ToolParseResult parse(std::string_view full_text);  // whole output at once
  // "functions.get_weather:0" → "get_weather".
  static std::string name_from_id(std::string_view id);

 private:
  enum class State { Content, Section, Header, Args };
  void run(ToolParseDelta& out, bool final);

  State state_ = State::Content;
  std::string buf_;  // text not yet consumed
  int index_ = 0;    // index of the current / next call
  bool skip_call_ = false;  // in the arguments of a call that has no name (dropped)
};

}  // namespace ds
