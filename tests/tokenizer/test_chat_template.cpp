// Chat template rendering: golden Hugging Face renderings, the built-in Kimi format, errors.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/jinja/value.h"
#include "tokenizer/tokenizer.h"

namespace {

using ojson = nlohmann::ordered_json;
const std::string kTokDir = std::string(DS_FIXTURES_DIR) + "/tiny/tokenizer";

ojson load(const std::string& path) {
  std::ifstream f(path);
  EXPECT_TRUE(f.good()) << path;
  return ojson::parse(f);
}

TEST(ChatTemplate, GoldenCasesRenderByteForByte) {
  auto tok = ds::Tokenizer::from_dir(kTokDir);
  ASSERT_FALSE(tok->chat_template_source().empty());
  auto cases = load(kTokDir + "/chat_cases.json");
  ASSERT_EQ(cases.size(), 9u);
  for (const auto& c : cases) {
    ojson tools = c.contains("tools") ? c["tools"] : ojson();
    std::string got = tok->apply_chat_template(c["messages"], tools, c["add_generation_prompt"].get<bool>());
    EXPECT_EQ(got, c["expected"].get<std::string>());
  }
}

}  // namespace

namespace {

// Template snippets rendered by jinja2 with Hugging Face's settings (gen_jinja_cases.py).
TEST(ChatTemplate, MatchesJinja2OnFeatureCases) {
  auto cases = load(std::string(DS_SOURCE_DIR) + "/tests/tokenizer/data/jinja_cases.json");
  ASSERT_GE(cases.size(), 70u);
  for (const auto& c : cases) {
    const std::string tmpl = c["template"].get<std::string>();
    SCOPED_TRACE(tmpl);
    if (c.contains("error")) {
      EXPECT_THROW(
          {
            ds::ChatTemplate t(tmpl);
            t.render(c["context"]);
          },
          ds::Error);
      continue;
    }
    std::string got;
    try {
      got = ds::ChatTemplate(tmpl).render(c["context"]);
    } catch (const ds::Error& e) {
      ADD_FAILURE() << "threw: " << e.what();
      continue;
    }
    EXPECT_EQ(got, c["expected"].get<std::string>());
  }
}

TEST(ChatTemplate, BuiltinKimiFormatMatchesTheModelTemplate) {
  auto tok = ds::Tokenizer::from_dir(kTokDir);
  auto cases = load(kTokDir + "/chat_cases.json");
  for (const auto& c : cases) {
    ojson ctx = {{"messages", c["messages"]},
                 {"tools", c.contains("tools") ? c["tools"] : ojson()},
                 {"add_generation_prompt", c["add_generation_prompt"]}};
    EXPECT_EQ(ds::ChatTemplate::builtin_kimi().render(ctx), c["expected"].get<std::string>());
  }
  // List content with an image part, and non-string tool-call arguments (rendered with tojson).
  ojson msgs = ojson::parse(R"([
    {"role": "user", "content": [{"type": "text", "text": "see "}, {"type": "image_url", "image_url": {"url": "x"}}]},
    {"role": "assistant", "content": "ok", "tool_calls": [{"id": "functions.f:0", "type": "function",
      "function": {"name": "f", "arguments": {"b": 1, "a": "é"}}}]}])");
  ojson ctx = {{"messages", msgs}, {"tools", nullptr}, {"add_generation_prompt", false}};
  EXPECT_EQ(ds::ChatTemplate::builtin_kimi().render(ctx),
            "<|im_user|>user<|im_middle|>see <|media_start|>image<|media_content|><|media_pad|><|media_end|>"
            "<|im_end|><|im_assistant|>assistant<|im_middle|>ok<|tool_calls_section_begin|><|tool_call_begin|>"
            "functions.f:0<|tool_call_argument_begin|>{\"b\": 1, \"a\": \"é\"}<|tool_call_end|>"
            "<|tool_calls_section_end|><|im_end|>");
}

TEST(ChatTemplate, TokenizerWithoutTemplateUsesBuiltin) {
  std::vector<std::string> ranks;
  for (int b = 0; b < 256; ++b) ranks.emplace_back(1, char(b));
  ds::Tokenizer tok(ranks, nlohmann::json::object());
  EXPECT_TRUE(tok.chat_template_source().empty());
  nlohmann::json msgs = nlohmann::json::parse(R"([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}])");
  EXPECT_EQ(tok.apply_chat_template(msgs, nullptr, true),
            "<|im_system|>system<|im_middle|>S<|im_end|><|im_user|>user<|im_middle|>U<|im_end|>"
            "<|im_assistant|>assistant<|im_middle|>");
}

std::string error_of(const std::string& tmpl, const ojson& ctx = ojson::object()) {
  try {
    ds::ChatTemplate(tmpl).render(ctx);
  } catch (const ds::Error& e) {
    return e.what();
  }
  return "(no error)";
}

std::string render(const std::string& tmpl, const ojson& ctx = ojson::object()) {
  return ds::ChatTemplate(tmpl).render(ctx);
}

// Numbers beyond int64 are template errors, never a library exception or undefined behaviour
// (fuzz_jinja found `{{ 0.0.011111111111111111101 }}` escaping as std::out_of_range).
TEST(ChatTemplate, IntegerLimitsAreErrors) {
  EXPECT_NE(error_of("{{ 99999999999999999999 }}").find("out of range"), std::string::npos);
  EXPECT_NE(error_of("{{ x.99999999999999999999 }}", {{"x", {1}}}).find("out of range"), std::string::npos);
  EXPECT_NE(error_of("{{ 9223372036854775807 + 1 }}").find("integer overflow"), std::string::npos);
  EXPECT_NE(error_of("{{ -9223372036854775807 - 2 }}").find("integer overflow"), std::string::npos);
  EXPECT_NE(error_of("{{ 4294967296 * 4294967296 }}").find("integer overflow"), std::string::npos);
  EXPECT_NE(error_of("{{ (-9223372036854775807 - 1) // -1 }}").find("integer overflow"), std::string::npos);
  EXPECT_NE(error_of("{{ 2 ** 64 }}").find("integer overflow"), std::string::npos);
  EXPECT_NE(error_of("{{ (-9223372036854775807 - 1) | abs }}").find("integer overflow"), std::string::npos);
  EXPECT_NE(error_of("{{ 'ab' * 100000000000 }}").find("too large"), std::string::npos);
  EXPECT_NE(error_of("{{ -(-9223372036854775807 - 1) }}").find("integer overflow"), std::string::npos);
  // In range: exact, including values a double cannot hold.
  EXPECT_EQ(render("{{ 9223372036854775806 + 1 }}"), "9223372036854775807");
  EXPECT_EQ(render("{{ 9223372036854775807 == 9223372036854775806 }}"), "False");
  EXPECT_EQ(render("{{ 2 ** 62 }}|{{ -7 // 2 }}|{{ -7 % 2 }}"), "4611686018427387904|-4|1");
  EXPECT_EQ(render("{{ x.1 }}|{{ xs | map(attribute='0') | join(',') }}", {{"x", {5, 6}}, {"xs", {{7}, {8}}}}), "6|7,8");
  // The int filter: out-of-range floats take the default, like unparsable strings.
  EXPECT_EQ(render("{{ 1e300 | int }}|{{ '1e300' | int(7) }}|{{ '12' | int }}|{{ 2.9 | int }}"), "0|7|12|2");
  EXPECT_EQ(render("{% for i in range(9223372036854775806, 9223372036854775807, 5) %}{{ i }}{% endfor %}"),
            "9223372036854775806");
}

// Nesting is bounded (parsing and rendering recurse on it): deep templates are an error, not a
// stack overflow.
TEST(ChatTemplate, DeepNestingIsAnError) {
  for (const std::string& open : {std::string("("), std::string("["), std::string("not "), std::string("-")}) {
    std::string close = open == "(" ? ")" : open == "[" ? "]" : "";
    std::string tmpl = "{{ ";
    for (int i = 0; i < 20000; ++i) tmpl += open;
    tmpl += "1";
    for (int i = 0; i < 20000; ++i) tmpl += close;
    EXPECT_NE(error_of(tmpl + " }}").find("nested more than"), std::string::npos) << open;
  }
  std::string ifs;
  for (int i = 0; i < 20000; ++i) ifs += "{% if true %}";
  EXPECT_NE(error_of(ifs).find("nested more than"), std::string::npos);
  // Moderate nesting still works.
  EXPECT_EQ(render("{{ " + std::string(150, '(') + "1" + std::string(150, ')') + " }}"), "1");
  EXPECT_EQ(render("{{ " + std::string(40, '[') + "7" + std::string(40, ']') + " | first | first | first }}"),
            render("{{ " + std::string(37, '[') + "7" + std::string(37, ']') + " }}"));
}

// Namespaces are the only mutable values: storing one inside itself (directly, through a list or
// dict, or through another namespace) is an error, so no value is cyclic (printing it would recurse
// forever and the cycle would never be freed; CI's fuzz_jinja found `{% set ns.n = ns, 1 %}`).
TEST(ChatTemplate, ANamespaceCannotHoldItself) {
  EXPECT_NE(error_of("{% set ns = namespace(n=0) %}{% set ns.n = ns, 1 %}{{ ns.n }}").find("inside itself"),
            std::string::npos);
  EXPECT_NE(error_of("{% set ns = namespace() %}{% set ns.x = ns %}").find("inside itself"), std::string::npos);
  EXPECT_NE(error_of("{% set ns = namespace() %}{% set ns.x = {'a': [1, [ns]]} %}").find("inside itself"),
            std::string::npos);
  std::string two = "{% set a = namespace() %}{% set b = namespace() %}{% set a.b = b %}{% set b.a = [a] %}";
  std::string e = error_of("x\n" + two);
  EXPECT_NE(e.find("inside itself"), std::string::npos) << e;
  EXPECT_NE(e.find("line 2"), std::string::npos) << e;
  // Namespaces holding other namespaces, shared values and self-references by value still work.
  EXPECT_EQ(render("{% set a = namespace(v=1) %}{% set b = namespace(a=a) %}{% set a.v = a.v + 1 %}{{ b.a.v }}"),
            "2");
  EXPECT_EQ(render("{% set ns = namespace(n=1) %}{% set ns.n = [ns.n, ns.n] %}{% set ns.n = [ns.n, ns.n] %}"
                   "{{ ns.n }}"),
            "[[1, 1], [1, 1]]");
  // A value shared 2^40 ways is checked in linear time.
  std::string wide = "{% set x = [1] %}";
  for (int i = 0; i < 40; ++i) wide += "{% set x = [x, x] %}";
  EXPECT_EQ(render("{% set ns = namespace() %}" + wide + "{% set ns.x = x %}{{ ns.x | length }}"), "2");
  // A loop cannot nest a namespace attribute without bound (printing or freeing it would recurse).
  EXPECT_NE(error_of("{% set ns = namespace(x=1) %}{% for i in range(100000) %}{% set ns.x = [ns.x] %}{% endfor %}")
                .find("nested more than"),
            std::string::npos);
  EXPECT_EQ(render("{% set ns = namespace(x=1) %}{% for i in range(100) %}{% set ns.x = [ns.x] %}{% endfor %}"
                   "{{ ns.x | tojson | length }}"),
            "201");
}

// Rendering is bounded by a work budget: runaway loops, values that double and huge output all end
// in an error naming the line, in bounded time and memory, and the budget resets for each rendering.
TEST(ChatTemplate, RenderingHasAWorkBudget) {
  const uint64_t saved = ds::jinja::render_budget();
  ds::jinja::set_render_budget(uint64_t(1) << 22);
  const std::vector<std::string> runaway = {
      "{% for i in range(10000000) %}{% for j in range(10000000) %}{% endfor %}{% endfor %}",
      "x\n{% for i in range(3000) %}{% for j in range(3000) %}.{% endfor %}{% endfor %}",
      "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
      "{% set x = [1] %}" + [] {
        std::string t;
        for (int i = 0; i < 40; ++i) t += "{% set x = [x, x] %}";
        return t;
      }() + "{{ x }}",
      "{{ [1] | tojson(indent=3691131880534) }}",  // fuzz_jinja: a 3.6 TB indent string
      "{{ ([[[[[[[[1]]]]]]]] * 4000) | tojson(indent=1000) }}",  // indentation bytes are charged
      "{% set ns = namespace(x=1) %}{% for i in range(40) %}{% set ns.x = [ns.x, ns.x] %}"
      "{{ ns.x | tojson | length }}{% endfor %}",
  };
  for (const std::string& t : runaway) {
    std::string e = error_of(t);
    EXPECT_NE(e.find("work budget"), std::string::npos) << t << " -> " << e;
  }
  EXPECT_NE(error_of(runaway[1]).find("line 2"), std::string::npos);
  // Within the budget the same kinds of template render, rendering after rendering.
  for (int k = 0; k < 3; ++k)
    EXPECT_EQ(render("{% for i in range(300) %}{% for j in range(30) %}.{% endfor %}{% endfor %}").size(), 9000u);
  ds::jinja::set_render_budget(saved);
  // The default budget renders a long conversation with the built-in Kimi template.
  ojson msgs = ojson::array();
  for (int i = 0; i < 2000; ++i)
    msgs.push_back({{"role", i % 2 ? "assistant" : "user"}, {"content", std::string(2000, 'a' + i % 26)}});
  EXPECT_GT(ds::ChatTemplate::builtin_kimi().render({{"messages", msgs}, {"add_generation_prompt", true}}).size(),
            4000000u);
}

TEST(ChatTemplate, ErrorsNameTheLine) {
  // Parse errors.
  EXPECT_NE(error_of("a\nb\n{{ 1 + }}\n").find("line 3"), std::string::npos) << error_of("a\nb\n{{ 1 + }}\n");
  EXPECT_NE(error_of("{% if x %}\n\n{% endfor %}").find("line 3"), std::string::npos);
  EXPECT_NE(error_of("ok\n{% frobnicate %}").find("line 2"), std::string::npos);
  EXPECT_NE(error_of("{{ 'unterminated }}\n").find("line 1"), std::string::npos);
  EXPECT_NE(error_of("x\n{% for m in messages %}\n{{ m }}").find("endfor"), std::string::npos);
  // Render errors.
  ojson ctx = {{"xs", ojson::array({ojson::object()})}};
  std::string e = error_of("{% for x in xs %}\n\n{{ x.foo.bar }}\n{% endfor %}", ctx);
  EXPECT_NE(e.find("line 3"), std::string::npos) << e;
  EXPECT_NE(e.find("foo"), std::string::npos) << e;
  e = error_of("1\n2\n3\n{{ 'a' | nosuchfilter }}");
  EXPECT_NE(e.find("line 4"), std::string::npos) << e;
  e = error_of("{% if true %}\n{{ raise_exception('Only user and assistant roles') }}\n{% endif %}");
  EXPECT_NE(e.find("line 2"), std::string::npos) << e;
  EXPECT_NE(e.find("Only user and assistant roles"), std::string::npos) << e;
  e = error_of("{% macro m() %}\n{{ 1 // 0 }}\n{% endmacro %}\n{{ m() }}");
  EXPECT_NE(e.find("line 2"), std::string::npos) << e;
  // The tokenizer reports a broken model template when rendering, not when loading.
  std::vector<std::string> ranks;
  for (int b = 0; b < 256; ++b) ranks.emplace_back(1, char(b));
  ds::Tokenizer tok(ranks, nlohmann::json::object(), "line one\n{% if %}");
  try {
    tok.apply_chat_template(nlohmann::json::array(), nullptr, true);
    ADD_FAILURE() << "expected an error";
  } catch (const ds::Error& err) {
    EXPECT_NE(std::string(err.what()).find("line 2"), std::string::npos) << err.what();
  }
}

TEST(ChatTemplate, ExtraKeysAndSpecialTokenNames) {
  std::vector<std::string> ranks;
  for (int b = 0; b < 256; ++b) ranks.emplace_back(1, char(b));
  auto cfg = nlohmann::json::parse(R"({"bos_token": "[BOS]", "eos_token": {"content": "[EOS]"},
    "added_tokens_decoder": {"256": {"content": "[BOS]"}, "257": {"content": "[EOS]"}}})");
  ds::Tokenizer tok(ranks, cfg, "{{ bos_token }}|{{ eos_token }}|{{ thinking }}|{{ messages | length }}");
  EXPECT_EQ(tok.apply_chat_template(nlohmann::json::array({{{"role", "user"}, {"content", "x"}}}), nullptr, false,
                                    {{"thinking", true}}),
            "[BOS]|[EOS]|True|1");
}

}  // namespace
