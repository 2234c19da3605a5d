// Helpers of the grammar tests: compile a constraint, match whole documents byte by byte, and a small
// byte-level vocabulary.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "grammar/constraint.h"
#include "grammar/grammar.h"
#include "grammar/matcher.h"
#include "grammar/token_index.h"

namespace ds::test {

inline std::shared_ptr<const Grammar> schema_grammar(const std::string& schema_json) {
  ConstraintSpec s;
  s.kind = ConstraintSpec::Kind::JsonSchema;
  s.schema = nlohmann::ordered_json::parse(schema_json);
  return compile_constraint(s);
}

inline std::shared_ptr<const Grammar> regex_grammar(const std::string& pattern) {
  ConstraintSpec s;
  s.kind = ConstraintSpec::Kind::Regex;
  s.pattern = pattern;
  return compile_constraint(s);
}

inline std::shared_ptr<const Grammar> ebnf_grammar(const std::string& text) {
  ConstraintSpec s;
  s.kind = ConstraintSpec::Kind::Ebnf;
  s.grammar = text;
  return compile_constraint(s);
}

// All 256 single bytes plus a few multi-byte tokens and two specials.
inline std::shared_ptr<const TokenIndex> small_vocab() {
  std::vector<std::string> bytes;
  for (int c = 0; c < 256; ++c) bytes.push_back(std::string(1, char(c)));
  for (const char* t : {"{\"", "\":", "\",", "\"}", "true", "false", "null", "12", "3.", ", \"", "\"]", "},{",
                        "ab", "abc", "\"a", "a\"", "a\",\"", "]}", "\\u", "00", "\xC3\xA9", "\xE2\x82", "-1", "e+"})
    bytes.push_back(t);
  std::vector<bool> special(bytes.size(), false);
  bytes.push_back("<|tool_calls_section_begin|>");
  bytes.push_back("<|tool_call_begin|>");
  bytes.push_back("<|tool_call_argument_begin|>");
  bytes.push_back("<|tool_call_end|>");
  bytes.push_back("<|tool_calls_section_end|>");
  bytes.push_back("<|im_end|>");
  special.resize(bytes.size(), true);
  return std::make_shared<TokenIndex>(bytes, special);
}

// Whole document accepted byte by byte and complete at its end.
inline bool matches(const std::shared_ptr<const Grammar>& g, const std::string& doc) {
  GrammarMatcher m(g, small_vocab());
  return m.accept_bytes(doc) && m.can_end();
}

}  // namespace ds::test
