// The grammar front ends behind compile_constraint (grammar/constraint.h); each emits rules into a
// builder and throws ds::Error with a message for the client (the server's 400).
#pragma once
#include <string_view>

#include <nlohmann/json.hpp>

#include "grammar/grammar.h"

namespace ds {

// A rule matching the JSON documents valid for `schema` (docs/STRUCTURED_OUTPUT.md lists the subset).
int json_schema_rule(GrammarBuilder& b, const nlohmann::ordered_json& schema);
// A rule matching any JSON object (`json_object`).
int json_any_object_rule(GrammarBuilder& b);
// An expression matching exactly the strings of the regular expression (whole-string match).
// json_string: the regex describes a JSON string's value; characters that JSON escapes are emitted as their
// escape sequences (what goes between the quotes).
GrammarBuilder::Expr regex_expr(GrammarBuilder& b, std::string_view pattern, bool json_string = false);
// The decimal integers in [lo, hi] (no leading zeros; |lo|, |hi| < 10^18).
GrammarBuilder::Expr integer_range(GrammarBuilder& b, int64_t lo, int64_t hi);
// Parses the GBNF-like dialect; returns the rule `root`.
int ebnf_rules(GrammarBuilder& b, std::string_view text);

}  // namespace ds
