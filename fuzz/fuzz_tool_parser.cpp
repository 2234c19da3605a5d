// Model output through the tool-call parser. Properties: parsing the whole text at once and
// streaming it in pieces (piece lengths taken from the input) give the same content and calls;
// the first delta of each call carries its id and name and deltas come in call order; a text with
// calls is one that has_tool_calls() recognises.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz/fuzz_common.h"
#include "tokenizer/tool_parser.h"

namespace {

using namespace ds;

struct Collected {
  std::string content;
  std::vector<ToolCall> calls;
  void add(const ToolParseDelta& d) {
    content += d.content;
    for (const auto& c : d.calls) {
      if (size_t(c.index) == calls.size()) {
        if (c.id.empty() || c.name.empty()) fuzz::finding("a call's first delta has no id or name");
        calls.push_back({c.id, c.name, ""});
      }
      if (size_t(c.index) + 1 != calls.size()) fuzz::finding("a delta for a call other than the last one");
      calls.back().arguments += c.arguments;
    }
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  // The first byte seeds the piece lengths; the rest is the model's output.
  const unsigned seed = data[0];
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);

  ToolParseResult whole = ToolCallParser::parse(text);
  if (!whole.calls.empty() && !ToolCallParser::has_tool_calls(text))
    fuzz::finding("has_tool_calls is false but parse found calls");

  ToolCallParser p;
  Collected s;
  size_t pos = 0;
  for (unsigned k = 0; pos < text.size(); ++k) {
    size_t len = 1 + ((seed * 7 + k * 13) % 23);
    s.add(p.push(text.substr(pos, len)));
    pos += len;
  }
  s.add(p.finish());
  if (s.content != whole.content) fuzz::finding("streamed content differs from the whole parse");
  if (s.calls.size() != whole.calls.size()) fuzz::finding("streamed calls differ in number from the whole parse");
  for (size_t i = 0; i < s.calls.size(); ++i)
    if (s.calls[i].id != whole.calls[i].id || s.calls[i].name != whole.calls[i].name ||
        s.calls[i].arguments != whole.calls[i].arguments)
      fuzz::finding("streamed call " + std::to_string(i) + " differs from the whole parse");
  return 0;
}
