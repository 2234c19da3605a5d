#include "grammar/constraint.h"

#include <fmt/format.h>

#include "core/error.h"
#include "grammar/frontends.h"
#include "grammar/grammar.h"

namespace ds {
namespace {

using Expr = GrammarBuilder::Expr;

// Kimi's tool-call markers (tokenizer/tool_parser.h) as their special tokens (TokenIndex::special_id
// resolves the names, with Kimi's ids as the fallback when a tokenizer config does not name them).
Expr marker(GrammarBuilder& b, const std::string& name) { return b.special(name); }

int tool_call_rules(GrammarBuilder& b, const ConstraintSpec& spec) {
  DS_CHECK(!spec.tools.empty(), "tool_choice requires at least one tool");
  std::vector<Expr> calls;
  bool found = spec.tool_name.empty();
  for (const ToolSpec& t : spec.tools) {
    DS_CHECK(!t.name.empty(), "a tool has no name");
    if (!spec.tool_name.empty() && t.name != spec.tool_name) continue;
    found = true;
    int args;
    if (t.parameters.is_null() || (t.parameters.is_object() && t.parameters.empty()))
      args = json_any_object_rule(b);
    else
      args = json_schema_rule(b, t.parameters);
    const Expr digit = b.byte_range('0', '9');
    calls.push_back(b.seq({b.literal("functions." + t.name + ":"), b.repeat(digit, 1, 3),
                           marker(b, "<|tool_call_argument_begin|>"), b.ref(args)}));
  }
  DS_CHECK(found, "tool_choice names the function '{}', which is not among the tools", spec.tool_name);
  const int call = b.fresh_rule("tool_call");
  b.define(call, b.seq({marker(b, "<|tool_call_begin|>"), b.alt(calls), marker(b, "<|tool_call_end|>")}));
  const int root = b.fresh_rule("tool_calls");
  const Expr more = spec.allow_parallel_tool_calls ? b.star(b.ref(call)) : b.empty();
  b.define(root, b.seq({marker(b, "<|tool_calls_section_begin|>"), b.ref(call), more,
                        marker(b, "<|tool_calls_section_end|>")}));
  return root;
}

}  // namespace

std::shared_ptr<const Grammar> compile_constraint(const ConstraintSpec& spec) {
  GrammarBuilder b;
  switch (spec.kind) {
    case ConstraintSpec::Kind::None: return nullptr;
    case ConstraintSpec::Kind::JsonObject: return b.build(json_any_object_rule(b));
    case ConstraintSpec::Kind::JsonSchema: return b.build(json_schema_rule(b, spec.schema));
    case ConstraintSpec::Kind::Regex: {
      const int root = b.rule("root");
      b.define(root, regex_expr(b, spec.pattern));
      return b.build(root);
    }
    case ConstraintSpec::Kind::Choice: {
      DS_CHECK(!spec.choices.empty(), "guided_choice needs at least one choice");
      std::vector<Expr> alts;
      for (const std::string& c : spec.choices) alts.push_back(b.literal(c));
      const int root = b.rule("root");
      b.define(root, b.alt(std::move(alts)));
      return b.build(root);
    }
    case ConstraintSpec::Kind::Ebnf: return b.build(ebnf_rules(b, spec.grammar));
    case ConstraintSpec::Kind::ToolCall: return b.build(tool_call_rules(b, spec));
  }
  fail("unknown constraint kind");
}

// ---------------------------------------------------------------------------------------------
// UTF-8
// ---------------------------------------------------------------------------------------------

namespace {

int utf8_len(uint32_t cp) { return cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4; }

void utf8_encode(uint32_t cp, uint8_t* out) {
  const int n = utf8_len(cp);
  if (n == 1) {
    out[0] = uint8_t(cp);
    return;
  }
  static constexpr uint8_t lead[5] = {0, 0, 0xC0, 0xE0, 0xF0};
  for (int i = n - 1; i > 0; --i) {
    out[i] = uint8_t(0x80 | (cp & 0x3F));
    cp >>= 6;
  }
  out[0] = uint8_t(lead[n] | cp);
}

// [lo, hi] within one encoded length: split until each piece is a product of byte ranges.
void utf8_split(GrammarBuilder& b, uint32_t lo, uint32_t hi, std::vector<Expr>& out) {
  const int n = utf8_len(lo);
  for (int i = 1; i < n; ++i) {
    const uint32_t m = (uint32_t(1) << (6 * i)) - 1;
    if ((lo & ~m) != (hi & ~m)) {
      if ((lo & m) != 0) {
        utf8_split(b, lo, lo | m, out);
        utf8_split(b, (lo | m) + 1, hi, out);
        return;
      }
      if ((hi & m) != m) {
        utf8_split(b, lo, (hi & ~m) - 1, out);
        utf8_split(b, hi & ~m, hi, out);
        return;
      }
    }
  }
  uint8_t a[4], z[4];
  utf8_encode(lo, a);
  utf8_encode(hi, z);
  std::vector<Expr> items;
  for (int i = 0; i < n; ++i) items.push_back(b.byte_range(a[i], z[i]));
  out.push_back(b.seq(std::move(items)));
}

}  // namespace

GrammarBuilder::Expr utf8_range(GrammarBuilder& b, uint32_t lo, uint32_t hi) {
  std::vector<Expr> out;
  const uint32_t bounds[][2] = {{0, 0x7F}, {0x80, 0x7FF}, {0x800, 0xD7FF}, {0xE000, 0xFFFF}, {0x10000, 0x10FFFF}};
  for (const auto& bd : bounds) {
    const uint32_t l = std::max(lo, bd[0]), h = std::min(hi, bd[1]);
    if (l <= h) utf8_split(b, l, h, out);
  }
  if (out.empty()) return b.bytes(ByteSet());  // matches nothing
  return b.alt(std::move(out));
}

GrammarBuilder::Expr utf8_char_except(GrammarBuilder& b, const ByteSet& excluded_ascii) {
  ByteSet ascii;
  for (int c = 0; c < 0x80; ++c)
    if (!excluded_ascii.test(size_t(c))) ascii.set(size_t(c));
  return b.alt({b.bytes(ascii), utf8_range(b, 0x80, 0x10FFFF)});
}

}  // namespace ds
