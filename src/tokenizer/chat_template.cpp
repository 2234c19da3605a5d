#include "tokenizer/chat_template.h"

#include <algorithm>

#include "tokenizer/jinja/interpreter.h"

namespace ds {

namespace {

// Kimi's chat format (spec §7.4): optional tool declaration, then per message
// <|im_{user,assistant,system}|>{name or role}<|im_middle|>{content}<|im_end|>; assistant tool calls
// in a tool-calls section after the content; tool results as "## Return of {id}\n{content}".
// List content: text parts concatenated, image parts as the media placeholder. No default system
// prompt is injected.
const char* const kKimiTemplate = R"JINJA({%- macro content_of(m) -%}
  {%- if m['content'] is string -%}
    {{- m['content'] -}}
  {%- elif m['content'] is not none -%}
    {%- for part in m['content'] -%}
      {%- if part['type'] == 'text' -%}
        {{- part['text'] -}}
      {%- elif part['type'] in ['image', 'image_url'] -%}
        {{- '<|media_start|>image<|media_content|><|media_pad|><|media_end|>' -}}
      {%- endif -%}
    {%- endfor -%}
  {%- endif -%}
{%- endmacro -%}
{%- if tools -%}
  {{- '<|im_system|>tool_declare<|im_middle|>' ~ (tools | tojson(separators=(',', ':'))) ~ '<|im_end|>' -}}
{%- endif -%}
{%- for m in messages -%}
  {%- set who = m.get('name') or m['role'] -%}
  {%- if m['role'] == 'user' -%}
    {{- '<|im_user|>' ~ who ~ '<|im_middle|>' -}}
  {%- elif m['role'] == 'assistant' -%}
    {{- '<|im_assistant|>' ~ who ~ '<|im_middle|>' -}}
  {%- else -%}
    {{- '<|im_system|>' ~ who ~ '<|im_middle|>' -}}
  {%- endif -%}
  {%- if m['role'] == 'tool' -%}
    {{- '## Return of ' ~ m['tool_call_id'] ~ '\n' ~ content_of(m) -}}
  {%- elif m.get('tool_calls') -%}
    {{- content_of(m) ~ '<|tool_calls_section_begin|>' -}}
    {%- for call in m['tool_calls'] -%}
      {%- set args = call['function']['arguments'] -%}
      {{- '<|tool_call_begin|>' ~ call['id'] ~ '<|tool_call_argument_begin|>' -}}
      {{- args if args is string else args | tojson -}}
      {{- '<|tool_call_end|>' -}}
    {%- endfor -%}
    {{- '<|tool_calls_section_end|>' -}}
  {%- else -%}
    {{- content_of(m) -}}
  {%- endif -%}
  {{- '<|im_end|>' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '<|im_assistant|>assistant<|im_middle|>' -}}
{%- endif -%})JINJA";

}  // namespace

ChatTemplate::ChatTemplate(const std::string& source) {
  try {
    program_ = std::make_unique<jinja::Program>(source);
  } catch (const jinja::TemplateError& e) {
    fail("chat template line {}: {}", e.line(), e.message());
  }
}

ChatTemplate::~ChatTemplate() = default;
ChatTemplate::ChatTemplate(ChatTemplate&&) noexcept = default;

std::string ChatTemplate::render(const nlohmann::ordered_json& context) const {
  try {
    return program_->render(jinja::from_json(context));
  } catch (const jinja::TemplateError& e) {
    fail("chat template line {}: {}", e.line(), e.message());
  }
}

ChatPrompt ChatTemplate::render_marked(const nlohmann::ordered_json& context,
                                       const std::vector<std::string>& data_keys) const {
  jinja::Dict vars;
  if (context.is_object())
    for (const auto& [k, v] : context.items()) {
      const bool data = std::find(data_keys.begin(), data_keys.end(), k) != data_keys.end();
      vars.items.emplace_back(k, jinja::from_json(v, data));
    }
  try {
    jinja::Rendered r = program_->render_marked(jinja::Value(std::move(vars)));
    return {std::move(r.text), std::move(r.data)};
  } catch (const jinja::TemplateError& e) {
    fail("chat template line {}: {}", e.line(), e.message());
  }
}

const ChatTemplate& ChatTemplate::builtin_kimi() {
  static const ChatTemplate t(kKimiTemplate);
  return t;
}

const char* ChatTemplate::builtin_kimi_source() { return kKimiTemplate; }

}  // namespace ds
