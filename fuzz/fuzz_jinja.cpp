// The Jinja lexer, parser and interpreter: template text, then a NUL byte, then a JSON object whose
// keys become template variables (a chat-like default context when that part is missing or is not
// a JSON object). Property: the template renders or fails with ds::Error (TemplateError); no crash,
// no sanitizer report, no hang (rendering is bounded by its work budget).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/jinja/value.h"

namespace {

using ojson = nlohmann::ordered_json;

const ojson& default_context() {
  static const ojson ctx = ojson::parse(R"({
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi <b>"},
                 {"role": "assistant", "content": "", "tool_calls": [{"id": "functions.f:0", "type": "function",
                   "function": {"name": "f", "arguments": "{\"x\": 1}"}}]},
                 {"role": "tool", "tool_call_id": "functions.f:0", "content": [{"type": "text", "text": "42"}]}],
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    "add_generation_prompt": true, "bos_token": "[BOS]", "eos_token": "[EOS]", "n": 3, "x": 1.5, "none": null})");
  return ctx;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // The property is "bounded by the render budget"; a smaller one keeps each input well under the
  // fuzzer's timeout under ASan (the default budget is for real conversations).
  ds::jinja::set_render_budget(uint64_t(1) << 23);
  const char* text = reinterpret_cast<const char*>(data);
  const char* nul = static_cast<const char*>(std::memchr(text, 0, size));
  const std::string source(text, nul ? size_t(nul - text) : size);
  ojson context = default_context();
  if (nul) {
    ojson parsed = ojson::parse(nul + 1, text + size, nullptr, /*allow_exceptions=*/false);
    if (parsed.is_object()) context = std::move(parsed);
  }
  try {
    ds::ChatTemplate tmpl(source);
    tmpl.render(context);
  } catch (const ds::Error&) {
  }
  return 0;
}
