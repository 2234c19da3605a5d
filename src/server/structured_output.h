// The request fields that constrain what a generation may produce, parsed and checked at the API
// edge into plain structs (the grammar engine compiles them later):
// - an output constraint from exactly one of OpenAI's `response_format` (json_object, json_schema),
//   vLLM's `structured_outputs` {json, regex, choice, grammar, json_object} or its legacy
//   `guided_json` / `guided_regex` / `guided_choice` / `guided_grammar`, or a forced tool call
//   (`tool_choice: "required"` or a named function);
// - token-level controls: `logit_bias`, `min_tokens`, `allowed_token_ids`, `bad_words`.
// Every problem is a 400 naming the field.
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "server/json_fields.h"

namespace ds {
class Grammar;
class Tokenizer;
struct GenerationRequest;
}  // namespace ds

namespace ds::server {

struct ToolSchema {
  std::string name;
  nlohmann::json parameters;  // the function's JSON schema; null when the tool gave none
  std::string parameters_at;  // JSON pointer of `parameters` in the request body ("" when none)
};

struct OutputConstraint {
  enum class Kind { None, JsonObject, JsonSchema, Regex, Choice, Grammar, ToolCall };
  Kind kind = Kind::None;
  std::string field;  // the request field it came from, for error messages
  // JsonSchema: the schema, and where it is in the request body (a JSON pointer; the value there is
  // the schema or JSON text of it). The grammar engine generates properties in the order the client
  // wrote them, which this parsed copy (keys sorted) has lost: it re-reads the body at schema_at.
  nlohmann::json schema;
  std::string schema_at;
  bool strict = false;               // json_schema.strict (the grammar is always enforced)
  std::string text;                  // Regex: the pattern; Grammar: the EBNF text
  std::vector<std::string> choices;  // Choice
  std::vector<ToolSchema> tools;     // ToolCall: every tool of the request
  std::string tool_name;             // ToolCall: "" any tool (tool_choice "required"), else this one
  bool parallel_tool_calls = true;   // ToolCall: more than one call allowed
  bool active() const { return kind != Kind::None; }
};

struct TokenControls {
  std::vector<std::pair<int32_t, float>> logit_bias;  // token id → bias added to its logit, in [-100, 100]
  int min_tokens = 0;                                 // EOS and stop tokens are masked before this many
  std::vector<int32_t> allowed_token_ids;             // empty: all
  std::vector<std::string> bad_words;                 // word sequences never generated
  bool active() const {
    return !logit_bias.empty() || min_tokens > 0 || !allowed_token_ids.empty() || !bad_words.empty();
  }
};

// Reads `response_format`, `structured_outputs` and the guided_* fields of `r`. At most one of
// them may ask for a constraint; `{"type": "text"}` asks for none.
OutputConstraint read_output_constraint(FieldReader& r);
// Reads `logit_bias`, `min_tokens`, `allowed_token_ids`, `bad_words`; token ids must be < vocab_size.
TokenControls read_token_controls(FieldReader& r, int vocab_size);
// The constraint of a forced tool call: `tools` validated chat tools (their parameters at
// /tools/i/function/parameters); `name` empty for "required".
OutputConstraint tool_call_constraint(const nlohmann::json& tools, const std::string& name, bool parallel);
// One constraint from the response format and a forced tool call: both at once is a 400.
void merge_tool_constraint(OutputConstraint* c, OutputConstraint tool);

// Compiles the constraint with the grammar engine (grammar/constraint.h); nullptr when there is none.
// `body`: the raw request body (schemas are re-read from it in the client's property order). What the
// engine cannot compile (an unsupported keyword, a bad regex or grammar) is a 400 naming c.field.
std::shared_ptr<const Grammar> compile_output_constraint(const OutputConstraint& c, const std::string& body);
// Sets the engine request's token controls: bad words tokenized (as written and after a space),
// min_tokens checked against the request's max_tokens (a 400 beyond it).
void apply_token_controls(const TokenControls& t, const Tokenizer& tok, GenerationRequest* req);

}  // namespace ds::server
