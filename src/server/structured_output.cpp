#include "server/structured_output.h"

#include <fmt/format.h>

#include <cstdlib>
#include <set>

#include "core/error.h"
#include "engine/engine.h"
#include "grammar/constraint.h"
#include "server/api_error.h"
#include "tokenizer/tokenizer.h"

namespace ds::server {

using nlohmann::json;

namespace {

using Kind = OutputConstraint::Kind;

constexpr double kMaxBias = 100.0;           // OpenAI's range for logit_bias values
constexpr size_t kMaxChoiceCount = 1 << 16;  // guided_choice entries
constexpr size_t kMaxBadWords = 1 << 12;

// A JSON schema given as an object, a boolean, or JSON text holding one.
json schema_from(const json& v, const std::string& field) {
  json s = v;
  if (v.is_string()) {
    try {
      s = json::parse(v.get<std::string>());
    } catch (const json::exception&) {
      throw bad_request(fmt::format("'{}' is a string but not valid JSON text of a schema", field), field);
    }
  }
  if (!s.is_object() && !s.is_boolean())
    throw bad_request(fmt::format("'{}' must be a JSON schema (an object), got {}", field, json_type_name(s)), field);
  return s;
}

std::string nonempty_string(const json& v, const std::string& field) {
  if (!v.is_string()) throw bad_request(fmt::format("'{}' must be a string, got {}", field, json_type_name(v)), field);
  std::string s = v.get<std::string>();
  if (s.empty()) throw bad_request(fmt::format("'{}' must not be empty", field), field);
  return s;
}

std::vector<std::string> choices_from(const json& v, const std::string& field) {
  if (!v.is_array() || v.empty())
    throw bad_request(fmt::format("'{}' must be a non-empty array of strings", field), field);
  if (v.size() > kMaxChoiceCount)
    throw bad_request(fmt::format("'{}' has more than {} entries", field, kMaxChoiceCount), field);
  std::vector<std::string> out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (!v[i].is_string())
      throw bad_request(fmt::format("'{}[{}]' must be a string, got {}", field, i, json_type_name(v[i])), field);
    out.push_back(v[i].get<std::string>());
  }
  return out;
}

OutputConstraint from_response_format(const json& rf, const UnknownFieldPolicy* unknown) {
  OutputConstraint c;
  if (!rf.is_object()) throw bad_request("'response_format' must be an object", "response_format");
  FieldReader r(rf, "response_format.", unknown);
  std::string type = r.string("type").value_or("");
  if (type == "text") {
    // no constraint
  } else if (type == "json_object") {
    c.kind = Kind::JsonObject;
  } else if (type == "json_schema") {
    const json* js = r.get("json_schema");
    if (!js || !js->is_object())
      throw bad_request("'response_format.json_schema' (an object with 'name' and 'schema') is required",
                        "response_format.json_schema");
    FieldReader s(*js, "response_format.json_schema.", unknown);
    s.string("name");
    s.string("description");
    c.strict = s.boolean("strict").value_or(false);
    if (const json* schema = s.get("schema")) {
      c.kind = Kind::JsonSchema;
      c.schema = schema_from(*schema, "response_format.json_schema.schema");
      c.schema_at = "/response_format/json_schema/schema";
    } else {
      c.kind = Kind::JsonObject;  // a named format without a schema: any JSON object
    }
    s.reject_unknown();
  } else {
    throw bad_request(
        fmt::format("'response_format.type' must be \"text\", \"json_object\" or \"json_schema\", got '{}'", type),
        "response_format.type");
  }
  r.reject_unknown();
  c.field = "response_format";
  return c;
}

// The keys vLLM spells both as structured_outputs.KEY and as guided_KEY, and what each asks for.
struct VllmKey {
  const char* key;
  Kind kind;
};
constexpr VllmKey kVllmKeys[] = {
    {"json", Kind::JsonSchema}, {"regex", Kind::Regex}, {"choice", Kind::Choice}, {"grammar", Kind::Grammar}};

// The constraint of one vLLM field: `v` is the value of request field `field`, at JSON pointer `pointer`.
OutputConstraint vllm_constraint(Kind kind, const json& v, const std::string& field, const std::string& pointer) {
  OutputConstraint c;
  c.kind = kind;
  c.field = field;
  if (kind == Kind::JsonSchema) {
    c.schema = schema_from(v, field);
    c.schema_at = pointer;
  } else if (kind == Kind::Choice) {
    c.choices = choices_from(v, field);
  } else {
    c.text = nonempty_string(v, field);  // a regex or a grammar
  }
  return c;
}

void check_single(const std::vector<OutputConstraint>& found, const char* what) {
  if (found.size() > 1)
    throw bad_request(fmt::format("{}; got '{}' and '{}'", what, found[0].field, found[1].field), found[1].field);
}

// vLLM's structured_outputs object: exactly one of json, regex, choice, grammar, json_object.
OutputConstraint from_structured_outputs(const json& so, const UnknownFieldPolicy* unknown) {
  if (!so.is_object()) throw bad_request("'structured_outputs' must be an object", "structured_outputs");
  FieldReader r(so, "structured_outputs.", unknown);
  std::vector<OutputConstraint> found;
  for (const auto& k : kVllmKeys)
    if (const json* v = r.get(k.key))
      found.push_back(vllm_constraint(k.kind, *v, fmt::format("structured_outputs.{}", k.key),
                                      fmt::format("/structured_outputs/{}", k.key)));
  if (r.boolean("json_object").value_or(false)) {
    OutputConstraint c;
    c.kind = Kind::JsonObject;
    c.field = "structured_outputs.json_object";
    found.push_back(std::move(c));
  }
  if (r.has("structural_tag"))
    throw bad_request("'structured_outputs.structural_tag' is not supported", "structured_outputs.structural_tag");
  // Options of vLLM's grammar backends with no effect here.
  r.ignore({"disable_fallback", "disable_any_whitespace", "disable_additional_properties", "whitespace_pattern"});
  r.reject_unknown();
  check_single(found, "'structured_outputs' may hold only one of json, regex, choice, grammar, json_object");
  return found.empty() ? OutputConstraint{} : std::move(found[0]);
}

}  // namespace

OutputConstraint read_output_constraint(FieldReader& r) {
  std::vector<OutputConstraint> found;
  if (const json* rf = r.get("response_format")) {
    OutputConstraint c = from_response_format(*rf, r.policy());
    if (c.active()) found.push_back(std::move(c));
  }
  if (const json* so = r.get("structured_outputs")) {
    OutputConstraint c = from_structured_outputs(*so, r.policy());
    if (c.active()) found.push_back(std::move(c));
  }
  for (const auto& k : kVllmKeys) {
    const std::string field = fmt::format("guided_{}", k.key);
    if (const json* v = r.get(field)) found.push_back(vllm_constraint(k.kind, *v, field, "/" + field));
  }
  // vLLM's backend choice and whitespace options: one engine here.
  r.ignore({"guided_decoding_backend", "guided_whitespace_pattern"});
  check_single(found, "only one output constraint may be given");
  return found.empty() ? OutputConstraint{} : std::move(found[0]);
}

TokenControls read_token_controls(FieldReader& r, int vocab_size) {
  TokenControls t;
  if (const json* lb = r.get("logit_bias")) {
    if (!lb->is_object())
      throw bad_request("'logit_bias' must be an object mapping token ids (as strings) to numbers", "logit_bias");
    std::set<long long> seen;
    for (auto it = lb->begin(); it != lb->end(); ++it) {
      const std::string& key = it.key();
      std::string at = fmt::format("logit_bias.{}", key);
      char* end = nullptr;
      long long id = key.empty() ? -1 : std::strtoll(key.c_str(), &end, 10);
      if (key.empty() || *end != '\0' || id < 0 || id >= vocab_size)
        throw bad_request(fmt::format("'logit_bias' key '{}' is not a token id in [0, {})", key, vocab_size), at);
      if (!seen.insert(id).second) throw bad_request(fmt::format("'logit_bias' names token id {} twice", id), at);
      if (!it->is_number())
        throw bad_request(fmt::format("'{}' must be a number, got {}", at, json_type_name(*it)), at);
      double bias = it->get<double>();
      if (!(bias >= -kMaxBias && bias <= kMaxBias))
        throw bad_request(fmt::format("'{}' must be between -100 and 100, got {}", at, bias), at);
      t.logit_bias.emplace_back(int32_t(id), float(bias));
    }
  }
  t.min_tokens = int(r.integer("min_tokens", 0, int64_t(1) << 30).value_or(0));
  if (const json* ids = r.get("allowed_token_ids")) {
    if (!ids->is_array() || ids->empty())
      throw bad_request("'allowed_token_ids' must be a non-empty array of token ids", "allowed_token_ids");
    for (size_t i = 0; i < ids->size(); ++i) {
      const json& v = (*ids)[i];
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= vocab_size)
        throw bad_request(fmt::format("'allowed_token_ids[{}]' is not a token id in [0, {})", i, vocab_size),
                          "allowed_token_ids");
      t.allowed_token_ids.push_back(v.get<int32_t>());
    }
  }
  if (const json* bw = r.get("bad_words")) {
    if (!bw->is_array()) throw bad_request("'bad_words' must be an array of strings", "bad_words");
    if (bw->size() > kMaxBadWords)
      throw bad_request(fmt::format("'bad_words' has more than {} entries", kMaxBadWords), "bad_words");
    for (size_t i = 0; i < bw->size(); ++i)
      t.bad_words.push_back(nonempty_string((*bw)[i], fmt::format("bad_words[{}]", i)));
  }
  return t;
}

OutputConstraint tool_call_constraint(const json& tools, const std::string& name, bool parallel) {
  OutputConstraint c;
  c.kind = Kind::ToolCall;
  c.field = "tool_choice";
  c.tool_name = name;
  c.parallel_tool_calls = parallel;
  for (size_t i = 0; i < tools.size(); ++i) {
    const json& fn = tools[i].at("function");
    const json* params = find_field(fn, "parameters");
    c.tools.push_back({fn.at("name").get<std::string>(), params ? *params : json(nullptr),
                       params ? fmt::format("/tools/{}/function/parameters", i) : std::string()});
  }
  return c;
}

void merge_tool_constraint(OutputConstraint* c, OutputConstraint tool) {
  if (c->active())
    throw bad_request(fmt::format("a forced tool call ('tool_choice') cannot be combined with '{}'", c->field),
                      "tool_choice");
  *c = std::move(tool);
}

namespace {

// The value at `pointer` in the body, as ordered JSON (a string there holds JSON text); `fallback`
// (keys sorted) when there is no pointer.
nlohmann::ordered_json ordered_at(const nlohmann::ordered_json* body, const std::string& pointer,
                                  const json& fallback) {
  if (!body || pointer.empty()) return nlohmann::ordered_json::parse(fallback.dump());
  const auto& v = body->at(nlohmann::ordered_json::json_pointer(pointer));
  return v.is_string() ? nlohmann::ordered_json::parse(v.get<std::string>()) : v;
}

}  // namespace

std::shared_ptr<const Grammar> compile_output_constraint(const OutputConstraint& c, const std::string& body) {
  if (!c.active()) return nullptr;
  ConstraintSpec spec;
  // The body parsed once more, keeping key order, when a schema is to be read from it.
  bool needs_body = !c.schema_at.empty();
  for (const auto& t : c.tools) needs_body |= !t.parameters_at.empty();
  nlohmann::ordered_json ordered;
  if (needs_body) ordered = nlohmann::ordered_json::parse(body);  // parsed before: cannot fail
  const nlohmann::ordered_json* ob = needs_body ? &ordered : nullptr;
  switch (c.kind) {
    case OutputConstraint::Kind::None: return nullptr;
    case OutputConstraint::Kind::JsonObject: spec.kind = ConstraintSpec::Kind::JsonObject; break;
    case OutputConstraint::Kind::JsonSchema:
      spec.kind = ConstraintSpec::Kind::JsonSchema;
      spec.schema = ordered_at(ob, c.schema_at, c.schema);
      break;
    case OutputConstraint::Kind::Regex:
      spec.kind = ConstraintSpec::Kind::Regex;
      spec.pattern = c.text;
      break;
    case OutputConstraint::Kind::Choice:
      spec.kind = ConstraintSpec::Kind::Choice;
      spec.choices = c.choices;
      break;
    case OutputConstraint::Kind::Grammar:
      spec.kind = ConstraintSpec::Kind::Ebnf;
      spec.grammar = c.text;
      break;
    case OutputConstraint::Kind::ToolCall:
      spec.kind = ConstraintSpec::Kind::ToolCall;
      for (const auto& t : c.tools)
        spec.tools.push_back({t.name, t.parameters.is_null() ? nlohmann::ordered_json()
                                                             : ordered_at(ob, t.parameters_at, t.parameters)});
      spec.tool_name = c.tool_name;
      spec.allow_parallel_tool_calls = c.parallel_tool_calls;
      break;
  }
  try {
    return compile_constraint(spec);
  } catch (const Error& e) {
    throw bad_request(fmt::format("'{}': {}", c.field, e.what()), c.field);
  }
}

void apply_token_controls(const TokenControls& t, const Tokenizer& tok, GenerationRequest* req) {
  req->logit_bias = t.logit_bias;
  req->allowed_token_ids = t.allowed_token_ids;
  if (t.min_tokens > req->max_tokens)
    throw bad_request(fmt::format("'min_tokens' ({}) must not exceed the completion's max_tokens ({})", t.min_tokens,
                                  req->max_tokens),
                      "min_tokens");
  req->min_tokens = t.min_tokens;
  req->bad_words.clear();
  for (const auto& w : t.bad_words) {
    for (const std::string& text : {w, " " + w}) {
      std::vector<int32_t> ids = tok.encode(text, /*allow_special=*/false);
      if (!ids.empty()) req->bad_words.push_back(std::move(ids));
    }
  }
}

}  // namespace ds::server
