// Constrained decoding: what a request asks for (ConstraintSpec, filled by the server from the OpenAI /
// vLLM request fields) and compile_constraint(), which turns it into a vocabulary-independent Grammar
// (grammar/grammar.h) or throws ds::Error naming what is not supported (the server answers 400 with
// that message). The engine binds the Grammar to the tokenizer's vocabulary and masks tokens with it
// (grammar/matcher.h); docs/STRUCTURED_OUTPUT.md lists the supported JSON-schema subset, the regex
// syntax and the EBNF dialect.
//
// How the server fills a request (engine/engine.h GenerationRequest):
//   response_format {type: json_object}            → kind JsonObject
//   response_format {type: json_schema, json_schema: {schema, strict}}, vLLM guided_json /
//     structured_outputs.json, Responses text.format json_schema → kind JsonSchema, schema = the schema
//     (an object; `true`/{} mean any JSON value). `strict` changes nothing: the grammar is always strict.
//   guided_regex / structured_outputs.regex          → kind Regex, pattern
//   guided_choice / structured_outputs.choice        → kind Choice, choices (the exact output strings)
//   guided_grammar / structured_outputs.grammar      → kind Ebnf, grammar (the GBNF-like dialect below)
//   tool_choice "required" (or "any")                → kind ToolCall, tools = every request tool,
//                                                      tool_name = "" (at least one call, any tool)
//   tool_choice {type: function, function: {name}}   → kind ToolCall, tools = every request tool,
//                                                      tool_name = name (exactly that tool; the server
//                                                      checks that the name is among the tools: 400)
//   parallel_tool_calls false                        → allow_parallel_tool_calls = false (one call)
//   tool_choice "auto"/"none", no response_format    → kind None (no grammar; do not set req.grammar)
// Then: `req.grammar = compile_constraint(spec);` inside the handler's try: a ds::Error is a 400 with
// e.what() as the message (e.g. "json_schema: unsupported keyword 'patternProperties' at
// /properties/a"). A constrained request ends ("stop") as soon as its output completes the grammar and
// nothing more can follow; until then EOS and the stop token ids are masked (only allowed where the
// grammar may end). Stop strings still apply to the text as usual: the server should not send stop
// strings with a constraint if it wants the full document (vLLM keeps them too).
// For ToolCall the output is Kimi's tool-call syntax and nothing else:
//   <|tool_calls_section_begin|> ( <|tool_call_begin|> functions.NAME:IDX <|tool_call_argument_begin|>
//   {JSON arguments valid for NAME's parameters schema} <|tool_call_end|> )+ <|tool_calls_section_end|>
// each marker being the special token (by id: resolved from the tokenizer by name when the engine binds
// the grammar, falling back to Kimi's ids 163595-163599 when the tokenizer config does not name them);
// the server parses it with the usual ToolCallParser (decode with special tokens).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ds {

class Grammar;  // grammar/grammar.h

struct ToolSpec {
  std::string name;
  nlohmann::ordered_json parameters;  // the tool's JSON schema (OpenAI `function.parameters`); null or {}:
                              // any JSON object
};

struct ConstraintSpec {
  enum class Kind { None, JsonObject, JsonSchema, Regex, Choice, Ebnf, ToolCall };
  Kind kind = Kind::None;
  nlohmann::ordered_json schema;      // JsonSchema (ordered: properties are generated in schema order;
                                      // a schema parsed as nlohmann::json comes out sorted by name)
  std::string pattern;                // Regex: the whole output matches (implicitly anchored)
  std::vector<std::string> choices;   // Choice: the output is exactly one of them (at least one)
  std::string grammar;                // Ebnf: GBNF-like rules, start symbol `root` (docs/STRUCTURED_OUTPUT.md)
  std::vector<ToolSpec> tools;        // ToolCall: the tools the model may call (at least one)
  std::string tool_name;              // ToolCall: "" any of `tools` (tool_choice required); else only it
  bool allow_parallel_tool_calls = true;  // ToolCall: more than one call in the section
  bool active() const { return kind != Kind::None; }
};

// Vocabulary-independent and immutable: share it between requests freely. Throws ds::Error naming the
// unsupported keyword / syntax error (for the server's 400). kind None: nullptr.
std::shared_ptr<const Grammar> compile_constraint(const ConstraintSpec& spec);

}  // namespace ds
