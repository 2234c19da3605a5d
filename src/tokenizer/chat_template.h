// A model's chat template, parsed once and rendered per request the way Hugging Face's
// apply_chat_template does (jinja2 with trim_blocks and lstrip_blocks, HF's `tojson`,
// `raise_exception`, `strftime_now`). Errors (parse or render) are ds::Error naming the template
// line: "chat template line N: ...".
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace ds {
namespace jinja {
class Program;
}

// A rendered chat prompt and the byte ranges [begin, end) of it that came from request data
// (message content and names, tool declarations, calls and results, template kwargs) rather than
// from the template's own text. Tokenizer::encode_chat encodes those ranges as plain text.
struct ChatPrompt {
  std::string text;
  std::vector<std::pair<size_t, size_t>> data;  // sorted, disjoint
};

class ChatTemplate {
 public:
  explicit ChatTemplate(const std::string& source);  // throws ds::Error naming the line
  ~ChatTemplate();
  ChatTemplate(ChatTemplate&&) noexcept;

  // `context`: an object whose keys become template variables (messages, tools,
  // add_generation_prompt, bos_token, ...). Key order of objects is kept for `tojson`.
  std::string render(const nlohmann::ordered_json& context) const;
  // The same, marking what came from the context keys named in `data_keys` (their strings and
  // object keys) as data in the result; other keys (bos_token, add_generation_prompt) are markup.
  ChatPrompt render_marked(const nlohmann::ordered_json& context, const std::vector<std::string>& data_keys) const;

  // The built-in Kimi chat format (spec §7.4), for models that ship no template.
  static const ChatTemplate& builtin_kimi();
  static const char* builtin_kimi_source();

 private:
  std::unique_ptr<jinja::Program> program_;
};

}  // namespace ds
