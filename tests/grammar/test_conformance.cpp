// JSON-schema, regex, EBNF and choice conformance: documents accepted or rejected byte by byte.
#include <gtest/gtest.h>

#include "core/error.h"
#include "grammar_test_util.h"

namespace ds::test {
namespace {

struct Case {
  const char* schema;
  std::vector<std::string> valid, invalid;
};

TEST(JsonSchema, Conformance) {
  const std::vector<Case> cases = {
      {R"({"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"}},"required":["name","age"]})",
       {R"({"name":"Bo","age":3})", R"({"name": "x", "age": -12})", R"({ "name":"\u00e9\n","age":0 })"},
       {R"({"age":3,"name":"Bo"})", R"({"name":"Bo"})", R"({"name":"Bo","age":3.5})", R"({"name":"Bo","age":03})",
        R"({"name":"Bo","age":3,"x":1})", R"({"name":"B"o","age":1})", "{\"name\":\"\x01\",\"age\":1}"}},
      {R"({"type":"object","properties":{"a":{"type":"boolean"},"b":{"type":"null"},"c":{"type":"number"}},"required":["c"]})",
       {R"({"c":1.5e3})", R"({"a":true,"c":-0.25})", R"({"a":false,"b":null,"c":0})", R"({"b":null,"c":2E-7})"},
       {R"({})", R"({"a":true})", R"({"c":1.})", R"({"c":.5})", R"({"c":1,"a":true})", R"({"a":true,,"c":1})"}},
      {R"({"type":"object","properties":{"x":{"type":"string"}}})", {R"({})", R"({"x":""})"}, {R"({"y":""})", R"([])"}},
      {R"({"type":"array","items":{"type":"integer"},"minItems":2,"maxItems":3})",
       {"[1,2]", "[1, 2, 3]"}, {"[]", "[1]", "[1,2,3,4]", "[1,\"a\"]"}},
      {R"({"type":"array","items":{"type":"string"}})", {"[]", R"(["a","b"])"}, {R"(["a",])", "[1]"}},
      {R"({"enum":["red","green",3,null]})", {R"("red")", "3", "null"}, {R"("blue")", "4", R"("Red")"}},
      {R"({"const":{"k":[1,2]}})", {R"({"k":[1,2]})"}, {R"({"k":[1,3]})"}},
      {R"({"anyOf":[{"type":"integer"},{"type":"string","maxLength":2}]})", {"12", R"("ab")", R"("")"}, {R"("abc")", "true"}},
      {R"({"type":["string","null"]})", {R"("s")", "null"}, {"1"}},
      {R"({"$defs":{"node":{"type":"object","properties":{"v":{"type":"integer"},"next":{"anyOf":[{"$ref":"#/$defs/node"},{"type":"null"}]}},"required":["v","next"]}},"$ref":"#/$defs/node"})",
       {R"({"v":1,"next":null})", R"({"v":1,"next":{"v":2,"next":{"v":3,"next":null}}})"},
       {R"({"v":1,"next":{"v":2}})", R"({"v":1})"}},
      {R"({"type":"string","format":"date"})", {R"("2024-02-29")"}, {R"("2024-13-01")", R"("24-01-01")"}},
      {R"({"type":"string","format":"uuid"})", {R"("123e4567-e89b-12d3-a456-426614174000")"}, {R"("123e4567")"}},
      {R"({"type":"string","format":"date-time"})", {R"("2024-01-02T03:04:05Z")", R"("2024-01-02T03:04:05.5+01:00")"},
       {R"("2024-01-02 03:04:05")"}},
      {R"({"type":"string","format":"email"})", {R"("a.b@c.org")"}, {R"("a@b")", R"("@b.c")"}},
      {R"({"type":"string","pattern":"^[A-Z]{2}-\\d{3}$"})", {R"("AB-123")"}, {R"("AB-12")", R"("ab-123")", R"("xAB-123")"}},
      {R"({"type":"string","pattern":"q\"x"})", {R"("q\"x")", R"("aq\"xb")"}, {R"("qx")"}},
      {R"({"type":"string","minLength":2,"maxLength":3})", {R"("ab")", R"("a\nb")", "\"\xC3\xA9\xC3\xA9\""}, {R"("a")", R"("abcd")"}},
      {R"({"type":"object","properties":{"a":{"type":"integer"}},"required":["a"],"additionalProperties":{"type":"string"}})",
       {R"({"a":1})", R"({"a":1,"zz":"q","y":""})"}, {R"({"a":1,"zz":2})"}},
      {R"({"type":"object","additionalProperties":true})", {R"({})", R"({"k":[1,{"z":null}],"j":"s"})"}, {R"({"k"})"}},
      {R"({"type":"integer","minimum":0})", {"0", "17", "1234567890123456"}, {"-1", "12345678901234567"}},
      {R"({"type":"number"})", {"1.5e10", "-0.0000000000000001"}, {"1e100", "1.00000000000000001"}},
      {R"({"type":"integer","minimum":-15,"maximum":208})",
       {"-15", "-9", "-1", "0", "7", "10", "99", "100", "199", "200", "208"},
       {"-16", "-0", "209", "300", "1000", "007", "-150"}},
      {R"({"type":"integer","exclusiveMinimum":0,"exclusiveMaximum":1000})", {"1", "999", "500"}, {"0", "1000", "-1"}},
      {R"({"type":"integer","minimum":18})", {"18", "19", "20", "100", "1234567890"}, {"17", "9", "0", "-18"}},
      {R"({"type":"integer","maximum":-3})", {"-3", "-10", "-99999"}, {"-2", "0", "3"}},
      {R"({"type":"number","exclusiveMinimum":0})", {"0.5", "3", "12.25", "0.001"}, {"0", "0.0", "-1", "0.000"}},
      {R"({"type":"array","prefixItems":[{"type":"string"},{"type":"integer"}]})", {R"(["a",1])"}, {R"(["a"])", R"([1,"a"])"}},
      {R"({"allOf":[{"type":"boolean"}]})", {"true"}, {"1"}},
      {R"(true)", {"1", R"({"a":[true,null,"x",-1.5e10]})", "[]"}, {"tru", "{]"}},
      {R"({"type":"object","properties":{"s":{"type":"string","nullable":true}},"required":["s"]})",
       {R"({"s":null})", R"({"s":"x"})"}, {R"({"s":1})"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.schema);
    auto g = schema_grammar(c.schema);
    for (const std::string& v : c.valid) EXPECT_TRUE(matches(g, v)) << "should accept " << v;
    for (const std::string& v : c.invalid) EXPECT_FALSE(matches(g, v)) << "should reject " << v;
  }
}

TEST(JsonSchema, JsonObjectIsAnyObject) {
  ConstraintSpec s;
  s.kind = ConstraintSpec::Kind::JsonObject;
  auto g = compile_constraint(s);
  EXPECT_TRUE(matches(g, R"({"a":{"b":[1,2,{"c":"d"}]},"e":false})"));
  EXPECT_TRUE(matches(g, "{}"));
  EXPECT_FALSE(matches(g, "[]"));
  EXPECT_FALSE(matches(g, "\"s\""));
  EXPECT_FALSE(matches(g, R"({"a":1,})"));
}

TEST(JsonSchema, PropertiesInSchemaOrder) {
  auto g = schema_grammar(R"({"type":"object","properties":{"zeta":{"type":"integer"},"alpha":{"type":"integer"}},"required":["zeta","alpha"]})");
  EXPECT_TRUE(matches(g, R"({"zeta":1,"alpha":2})"));
  EXPECT_FALSE(matches(g, R"({"alpha":2,"zeta":1})"));
}

TEST(JsonSchema, UnsupportedKeywordIsNamed) {
  auto expect_error = [](const std::string& schema, const std::string& needle) {
    try {
      schema_grammar(schema);
      ADD_FAILURE() << "no error for " << schema;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error(R"({"type":"object","properties":{"a":{"type":"string","patternProperties":{}}}})", "'patternProperties'");
  expect_error(R"({"type":"object","properties":{"a":{"type":"string","patternProperties":{}}}})", "/properties/a");
  expect_error(R"({"type":"number","maximum":5})", "'maximum'");
  expect_error(R"({"type":"integer","minimum":5,"maximum":4})", "empty");
  expect_error(R"({"type":"string","format":"color"})", "format 'color'");
  expect_error(R"({"$ref":"http://x/y"})", "$ref");
  expect_error(R"({"$ref":"#/$defs/missing"})", "does not resolve");
  expect_error(R"({"allOf":[{"type":"string"},{"maxLength":2}]})", "allOf");
  expect_error(R"({"type":"string","pattern":"(a)\\1"})", "backreferences");
}

TEST(Regex, Cases) {
  struct R {
    const char* re;
    std::vector<std::string> yes, no;
  };
  const std::vector<R> cases = {
      {"a|bc", {"a", "bc"}, {"", "b", "abc"}},
      {"(ab)*c?", {"", "ab", "abab", "ababc", "c"}, {"a", "abb", "cc"}},
      {"\\d{2,3}-[a-f]+", {"12-a", "123-fed"}, {"1-a", "1234-a", "12-g", "12-"}},
      {"[^a-z\\s]x", {"Ax", "1x", "\xC3\xA9x"}, {"ax", " x", "x"}},
      {"^h.llo$", {"hello", "h\xE2\x82\xACllo"}, {"h\nllo", "hllo"}},
      {"\\w+@\\w+\\.(com|org)", {"a_1@b.com", "x@y.org"}, {"@b.com", "a@b.net"}},
      {"(?:x|y){3}", {"xyx"}, {"xy", "xyxy"}},
      {"\\u00e9+\\x41", {"\xC3\xA9\xC3\xA9" "A"}, {"A"}},
      {"[\\-+]?\\d+(\\.\\d+)?", {"-1", "+2.5", "3"}, {"1.", "--1"}},
  };
  for (const R& c : cases) {
    SCOPED_TRACE(c.re);
    auto g = regex_grammar(c.re);
    for (const std::string& s : c.yes) EXPECT_TRUE(matches(g, s)) << s;
    for (const std::string& s : c.no) EXPECT_FALSE(matches(g, s)) << s;
  }
  EXPECT_THROW(regex_grammar("(?=a)b"), Error);
  EXPECT_THROW(regex_grammar("a\\bb"), Error);
  EXPECT_THROW(regex_grammar("(a"), Error);
  EXPECT_THROW(regex_grammar("*a"), Error);
}

TEST(Ebnf, Cases) {
  auto g = ebnf_grammar(R"G(
    # arithmetic
    root   ::= expr
    expr   ::= term (("+" | "-") term)*
    term   ::= factor ("*" factor)*
    factor ::= num | "(" expr ")"
    num    ::= [0-9]+
  )G");
  for (const char* s : {"1", "1+2*3", "(1+2)*3-45", "((7))"}) EXPECT_TRUE(matches(g, s)) << s;
  for (const char* s : {"", "1+", "(1", "1**2", "a"}) EXPECT_FALSE(matches(g, s)) << s;

  auto g2 = ebnf_grammar("root ::= 'yes' | 'no' {1,2} \"\\n\"?\nx ::= \"unused\"");
  EXPECT_TRUE(matches(g2, "yes"));
  EXPECT_TRUE(matches(g2, "nono\n"));
  EXPECT_FALSE(matches(g2, "nonono"));

  auto g3 = ebnf_grammar("root ::= item+\nitem ::= [a-c] sep?\nsep ::= \",\"");
  EXPECT_TRUE(matches(g3, "a,b,c"));
  EXPECT_TRUE(matches(g3, "abc,"));
  EXPECT_FALSE(matches(g3, ",a"));

  // The grammar of scripts/structured-bench.sh (JSON objects, one per line, forever).
  auto g4 = ebnf_grammar(R"G(root ::= (obj "\n")+
obj ::= "{" pair (", " pair)* "}"
pair ::= str ": " val
val ::= str | num | "true" | "false" | "null" | obj | "[" (val (", " val)*)? "]"
str ::= "\"" [a-zA-Z0-9 _.,-]{0,24} "\""
num ::= "-"? [0-9]{1,6} ("." [0-9]{1,4})?)G");
  EXPECT_TRUE(matches(g4, "{\"a\": 1, \"b\": [true, {\"c\": \"x y\"}]}\n{\"d\": -2.5}\n"));
  EXPECT_FALSE(matches(g4, "{\"a\": 1}"));
  EXPECT_FALSE(matches(g4, "{\"a\":1}\n"));

  EXPECT_THROW(ebnf_grammar("root ::= root \"a\" | \"b\""), Error);  // left recursion
  EXPECT_THROW(ebnf_grammar("root ::= missing"), Error);
  EXPECT_THROW(ebnf_grammar("start ::= \"a\""), Error);            // no root
  EXPECT_THROW(ebnf_grammar("root ::= \"a\"\nroot ::= \"b\""), Error);
  EXPECT_THROW(ebnf_grammar("root ::= (\"a\""), Error);
}

// A special token's name is part of a rule's signature; one holding "r@1" (fuzz_request:
// `<|...get_weather@1 | <|im_;end|>`) was read back as a reference to rule 1 and indexed past the rules.
TEST(Ebnf, SpecialTokenNamesDoNotReadAsRuleReferences) {
  std::shared_ptr<const Grammar> a, b;
  EXPECT_NO_THROW(a = ebnf_grammar("root ::= <|call.get_weather@1|> \"x\""));
  EXPECT_NO_THROW(b = ebnf_grammar("root ::= <|call.get_weather@2|> \"x\""));
  ASSERT_TRUE(a && b);
  EXPECT_NE(a->signature(0), b->signature(0));
  EXPECT_EQ(a->signature(0), ebnf_grammar("root ::= <|call.get_weather@1|> \"x\"")->signature(0));
}

TEST(Choice, ExactStrings) {
  ConstraintSpec s;
  s.kind = ConstraintSpec::Kind::Choice;
  s.choices = {"positive", "negative", "neutral"};
  auto g = compile_constraint(s);
  EXPECT_TRUE(matches(g, "positive"));
  EXPECT_TRUE(matches(g, "neutral"));
  EXPECT_FALSE(matches(g, "neg"));
  EXPECT_FALSE(matches(g, "positives"));
  s.choices.clear();
  EXPECT_THROW(compile_constraint(s), Error);
}

TEST(ToolCall, KimiSyntaxWithSchemaArguments) {
  ConstraintSpec s;
  s.kind = ConstraintSpec::Kind::ToolCall;
  s.tools = {{"get_weather", nlohmann::ordered_json::parse(R"({"type":"object","properties":{"city":{"type":"string"}},"required":["city"]})")},
             {"noop", nullptr}};
  auto g = compile_constraint(s);
  auto vocab = small_vocab();
  const int32_t sec_begin = vocab->special_id("<|tool_calls_section_begin|>");
  const int32_t call_begin = vocab->special_id("<|tool_call_begin|>");
  const int32_t arg_begin = vocab->special_id("<|tool_call_argument_begin|>");
  const int32_t call_end = vocab->special_id("<|tool_call_end|>");
  const int32_t sec_end = vocab->special_id("<|tool_calls_section_end|>");
  {
    GrammarMatcher m(g, vocab);
    EXPECT_TRUE(m.accept_token(sec_begin));
    EXPECT_TRUE(m.accept_token(call_begin));
    EXPECT_TRUE(m.accept_bytes("functions.get_weather:0"));
    EXPECT_TRUE(m.accept_token(arg_begin));
    EXPECT_FALSE(m.accept_bytes(R"({"town":"x"})"));
    EXPECT_TRUE(m.accept_bytes(R"({"city":"Paris"})"));
    EXPECT_FALSE(m.accept_token(sec_end));
    EXPECT_TRUE(m.accept_token(call_end));
    EXPECT_FALSE(m.can_end());
    EXPECT_FALSE(m.accept_bytes("<|tool_call_begin|>"));  // markers are the special tokens, not text
    // A second call (parallel calls allowed).
    EXPECT_TRUE(m.accept_token(call_begin));
    EXPECT_TRUE(m.accept_bytes("functions.noop:1"));
    EXPECT_TRUE(m.accept_token(arg_begin));
    EXPECT_TRUE(m.accept_bytes("{}"));
    EXPECT_TRUE(m.accept_token(call_end));
    EXPECT_TRUE(m.accept_token(sec_end));
    EXPECT_TRUE(m.terminated());
  }
  {
    GrammarMatcher m(g, vocab);
    EXPECT_FALSE(m.accept_bytes("hello"));  // no content before the calls
    EXPECT_TRUE(m.accept_token(sec_begin));
    EXPECT_TRUE(m.accept_token(call_begin));
    EXPECT_FALSE(m.accept_bytes("functions.other:0"));
  }
  s.tool_name = "noop";
  s.allow_parallel_tool_calls = false;
  g = compile_constraint(s);
  GrammarMatcher m(g, vocab);
  EXPECT_TRUE(m.accept_token(sec_begin));
  EXPECT_TRUE(m.accept_token(call_begin));
  EXPECT_FALSE(m.accept_bytes("functions.get_weather:0"));
  EXPECT_TRUE(m.accept_bytes("functions.noop:0"));
  EXPECT_TRUE(m.accept_token(arg_begin));
  EXPECT_TRUE(m.accept_bytes("{\"k\":1}"));
  EXPECT_TRUE(m.accept_token(call_end));
  EXPECT_FALSE(m.accept_token(call_begin));  // one call only
  EXPECT_TRUE(m.accept_token(sec_end));
  s.tool_name = "absent";
  EXPECT_THROW(compile_constraint(s), Error);
}

}  // namespace
}  // namespace ds::test
