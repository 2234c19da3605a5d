// JSON schema → grammar (the subset in docs/STRUCTURED_OUTPUT.md). Output is compact JSON with at most
// one space after ':' and ',' and inside brackets; properties come in schema order (required ones always,
// optional ones may be left out); additionalProperties absent means false (strict, as OpenAI's strict
// mode). Numbers have at most 16 integer and 16 fraction digits and a two-digit exponent (what a
// double holds; unbounded digits overflow clients' parsers). Shared pieces (string, number, any value) are rules of their own so that their token masks are
// cached across grammars.
#include <cmath>
#include <functional>
#include <map>
#include <set>
#include <unordered_map>

#include <fmt/format.h>

#include "core/error.h"
#include "grammar/frontends.h"

namespace ds {
namespace {

using Expr = GrammarBuilder::Expr;
using ojson = nlohmann::ordered_json;

const std::set<std::string>& known_keywords() {
  static const std::set<std::string> k = {
      "type", "properties", "required", "additionalProperties", "enum", "const", "items", "prefixItems",
      "minItems", "maxItems", "anyOf", "oneOf", "allOf", "$ref", "$defs", "definitions", "format", "pattern",
      "minLength", "maxLength", "title", "description", "default", "examples", "$schema", "$id", "$comment",
      "nullable", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "strict", "readOnly", "writeOnly", "deprecated", "propertyOrdering"};
  return k;
}

// Formats as regular expressions over the string's value.
const char* format_regex(const std::string& f) {
  if (f == "date") return R"(\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01]))";
  if (f == "time") return R"(([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)(\.\d+)?(Z|[+-]([01]\d|2[0-3]):[0-5]\d))";
  if (f == "date-time")
    return R"(\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)(\.\d+)?(Z|[+-]([01]\d|2[0-3]):[0-5]\d))";
  if (f == "uuid") return R"([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})";
  if (f == "email") return R"([A-Za-z0-9_+\-]+(\.[A-Za-z0-9_+\-]+)*@[A-Za-z0-9\-]+(\.[A-Za-z0-9\-]+)+)";
  if (f == "ipv4") return R"(((25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d))";
  if (f == "hostname") return R"([A-Za-z0-9]([A-Za-z0-9\-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)*)";
  if (f == "uri") return R"([A-Za-z][A-Za-z0-9+.\-]*:[^\s"\\]+)";
  return nullptr;
}

struct SchemaCompiler {
  GrammarBuilder& b;
  const ojson& root;
  std::unordered_map<std::string, int> ref_rules;

  Expr ws() { return b.opt(b.literal(" ")); }

  int shared(const char* name, const std::function<Expr()>& body) {
    if (b.has_rule(name)) return b.rule(name);
    const int r = b.rule(name);
    b.define(r, body());
    return r;
  }
  Expr string_char() {
    ByteSet ex;
    ex.set('"');
    ex.set('\\');
    for (int c = 0; c < 0x20; ++c) ex.set(size_t(c));
    ByteSet esc;
    for (char c : std::string("\"\\/bfnrt")) esc.set(size_t(uint8_t(c)));
    ByteSet hex;
    for (char c : std::string("0123456789abcdefABCDEF")) hex.set(size_t(uint8_t(c)));
    const Expr escape = b.seq({b.literal("\\"), b.alt({b.bytes(esc), b.seq({b.literal("u"), b.repeat(b.bytes(hex), 4, 4)})})});
    return b.alt({utf8_char_except(b, ex), escape});
  }
  int string_rule() {
    return shared("json_string", [&] { return b.seq({b.literal("\""), b.star(string_char()), b.literal("\"")}); });
  }
  Expr integer_body(bool nonneg) {
    // At most 16 digits (beyond 2^53 a client's double loses the value).
    const Expr digits = b.alt({b.literal("0"), b.seq({b.byte_range('1', '9'), b.repeat(b.byte_range('0', '9'), 0, 15)})});
    return nonneg ? digits : b.seq({b.opt(b.literal("-")), digits});
  }
  int integer_rule(bool nonneg) {
    return shared(nonneg ? "json_nonneg_integer" : "json_integer", [&] { return integer_body(nonneg); });
  }
  int number_rule(bool nonneg) {
    return shared(nonneg ? "json_nonneg_number" : "json_number", [&] {
      const Expr frac = b.seq({b.literal("."), b.repeat(b.byte_range('0', '9'), 1, 16)});
      ByteSet e, sign;
      e.set('e');
      e.set('E');
      sign.set('+');
      sign.set('-');
      const Expr exp = b.seq({b.bytes(e), b.opt(b.bytes(sign)), b.repeat(b.byte_range('0', '9'), 1, 2)});
      return b.seq({integer_body(nonneg), b.opt(frac), b.opt(exp)});
    });
  }
  int any_value_rule() {
    if (b.has_rule("json_value")) return b.rule("json_value");
    const int value = b.rule("json_value"), object = b.rule("json_any_object"), array = b.rule("json_any_array");
    const Expr sep = b.seq({b.literal(","), ws()});
    const Expr member = b.seq({b.ref(string_rule()), b.literal(":"), ws(), b.ref(value)});
    b.define(object, b.seq({b.literal("{"), ws(), b.opt(b.seq({member, b.star(b.seq({sep, member}))})), ws(), b.literal("}")}));
    b.define(array, b.seq({b.literal("["), ws(), b.opt(b.seq({b.ref(value), b.star(b.seq({sep, b.ref(value)}))})), ws(), b.literal("]")}));
    b.define(value, b.alt({b.ref(object), b.ref(array), b.ref(string_rule()), b.ref(number_rule(false)), b.literal("true"),
                           b.literal("false"), b.literal("null")}));
    return value;
  }

  [[noreturn]] void unsupported(const std::string& what, const std::string& path) {
    fail("json_schema: unsupported {} at {}", what, path.empty() ? "/" : path);
  }

  const ojson& resolve(const std::string& ref, const std::string& path) {
    if (ref == "#") return root;
    if (ref.rfind("#/", 0) != 0) unsupported(fmt::format("$ref '{}' (only local references \"#/...\")", ref), path);
    try {
      return root.at(ojson::json_pointer(ref.substr(1)));
    } catch (const std::exception&) {
      fail("json_schema: $ref '{}' at {} does not resolve", ref, path.empty() ? "/" : path);
    }
  }

  // A rule for the schema (named refs become one rule each, so recursion works).
  int rule_for(const ojson& s, const std::string& path) {
    if (s.is_object() && s.contains("$ref") && s.size() == 1) {
      const std::string ref = s["$ref"].is_string() ? s["$ref"].get<std::string>() : "";
      if (ref.empty()) unsupported("non-string $ref", path);
      auto it = ref_rules.find(ref);
      if (it != ref_rules.end()) return it->second;
      const int r = b.fresh_rule("ref");
      ref_rules.emplace(ref, r);
      b.define(r, value(resolve(ref, path), ref.substr(1)));
      return r;
    }
    const int r = b.fresh_rule("schema");
    b.define(r, value(s, path));
    return r;
  }

  Expr value(const ojson& s, const std::string& path) {
    if (s.is_boolean()) {
      if (!s.get<bool>()) fail("json_schema: the schema at {} is false (nothing is valid)", path.empty() ? "/" : path);
      return b.ref(any_value_rule());
    }
    if (!s.is_object()) fail("json_schema: the schema at {} is not an object", path.empty() ? "/" : path);
    for (auto it = s.begin(); it != s.end(); ++it)
      if (!known_keywords().count(it.key())) unsupported(fmt::format("keyword '{}'", it.key()), path);
    if (s.contains("$ref")) {
      if (s.size() > 1) {
        for (auto it = s.begin(); it != s.end(); ++it)
          if (it.key() != "$ref" && it.key() != "title" && it.key() != "description" && it.key() != "default" &&
              it.key() != "$defs" && it.key() != "definitions" && it.key() != "$schema")
            unsupported(fmt::format("keyword '{}' beside $ref", it.key()), path);
      }
      return b.ref(rule_for(ojson{{"$ref", s["$ref"]}}, path));
    }
    Expr e = typed(s, path);
    if (s.value("nullable", false)) e = b.alt({e, b.literal("null")});
    return e;
  }

  Expr typed(const ojson& s, const std::string& path) {
    if (s.contains("const")) return b.literal(s["const"].dump());
    if (s.contains("enum")) {
      if (!s["enum"].is_array() || s["enum"].empty()) fail("json_schema: enum at {} must be a non-empty array", path);
      std::vector<Expr> alts;
      for (const ojson& v : s["enum"]) alts.push_back(b.literal(v.dump()));
      return b.alt(std::move(alts));
    }
    for (const char* k : {"anyOf", "oneOf"})
      if (s.contains(k)) {
        if (!s[k].is_array() || s[k].empty()) fail("json_schema: {} at {} must be a non-empty array", k, path);
        std::vector<Expr> alts;
        for (size_t i = 0; i < s[k].size(); ++i) alts.push_back(b.ref(rule_for(s[k][i], fmt::format("{}/{}/{}", path, k, i))));
        return b.alt(std::move(alts));
      }
    if (s.contains("allOf")) {
      if (!s["allOf"].is_array() || s["allOf"].size() != 1) unsupported("allOf with more than one schema", path);
      return b.ref(rule_for(s["allOf"][0], path + "/allOf/0"));
    }
    std::vector<std::string> types;
    if (s.contains("type")) {
      if (s["type"].is_string()) {
        types.push_back(s["type"].get<std::string>());
      } else if (s["type"].is_array()) {
        for (const ojson& t : s["type"])
          if (t.is_string()) types.push_back(t.get<std::string>());
      } else {
        fail("json_schema: type at {} must be a string or an array", path);
      }
    } else if (s.contains("properties") || s.contains("additionalProperties") || s.contains("required")) {
      types.push_back("object");
    } else if (s.contains("items") || s.contains("prefixItems")) {
      types.push_back("array");
    } else if (s.contains("pattern") || s.contains("format") || s.contains("minLength") || s.contains("maxLength")) {
      types.push_back("string");
    } else {
      return b.ref(any_value_rule());
    }
    std::vector<Expr> alts;
    for (const std::string& t : types) alts.push_back(of_type(s, t, path));
    return b.alt(std::move(alts));
  }

  static constexpr int64_t kMaxInt = 9999999999999999;  // 16 digits, as the unbounded integers

  double bound(const ojson& s, const char* k, const std::string& path) {
    if (!s[k].is_number()) unsupported(fmt::format("non-numeric '{}'", k), path);
    const double v = s[k].get<double>();
    if (!(v > -1e16 && v < 1e16)) unsupported(fmt::format("'{}' beyond 16 digits", k), path);
    return v;
  }
  Expr integer_of(const ojson& s, const std::string& path) {
    const bool bounded = s.contains("minimum") || s.contains("maximum") || s.contains("exclusiveMinimum") ||
                         s.contains("exclusiveMaximum");
    if (!bounded) return b.ref(integer_rule(false));
    int64_t lo = -kMaxInt, hi = kMaxInt;
    if (s.contains("minimum")) lo = std::max(lo, int64_t(std::ceil(bound(s, "minimum", path))));
    if (s.contains("exclusiveMinimum")) lo = std::max(lo, int64_t(std::floor(bound(s, "exclusiveMinimum", path))) + 1);
    if (s.contains("maximum")) hi = std::min(hi, int64_t(std::floor(bound(s, "maximum", path))));
    if (s.contains("exclusiveMaximum")) hi = std::min(hi, int64_t(std::ceil(bound(s, "exclusiveMaximum", path))) - 1);
    if (lo > hi) fail("json_schema: the integer range at {} is empty", path.empty() ? "/" : path);
    if (lo == 0 && hi == kMaxInt) return b.ref(integer_rule(true));
    const int r = b.fresh_rule("int_range");
    b.define(r, integer_range(b, lo, hi));
    return b.ref(r);
  }
  Expr number_of(const ojson& s, const std::string& path) {
    for (const char* k : {"maximum", "exclusiveMaximum"})
      if (s.contains(k)) unsupported(fmt::format("'{}' on a number (integers only)", k), path);
    const bool min0 = s.contains("minimum") && bound(s, "minimum", path) == 0.0;
    const bool xmin0 = s.contains("exclusiveMinimum") && bound(s, "exclusiveMinimum", path) == 0.0;
    if ((s.contains("minimum") && !min0) || (s.contains("exclusiveMinimum") && !xmin0))
      unsupported("a number bound other than minimum 0 / exclusiveMinimum 0", path);
    if (xmin0) {  // positive: no sign, not all zeros, no exponent
      return b.ref(shared("json_positive_number", [&] {
        const Expr d = b.byte_range('0', '9');
        const Expr whole = b.seq({b.byte_range('1', '9'), b.repeat(d, 0, 15), b.opt(b.seq({b.literal("."), b.repeat(d, 1, 16)}))});
        const Expr fraction = b.seq({b.literal("0."), b.repeat(d, 0, 15), b.byte_range('1', '9')});
        return b.alt({whole, fraction});
      }));
    }
    return b.ref(number_rule(min0));
  }

  Expr of_type(const ojson& s, const std::string& t, const std::string& path) {
    if (t == "string") return string_of(s, path);
    if (t == "integer") return integer_of(s, path);
    if (t == "number") return number_of(s, path);
    if (t == "boolean") return b.alt({b.literal("true"), b.literal("false")});
    if (t == "null") return b.literal("null");
    if (t == "object") return object_of(s, path);
    if (t == "array") return array_of(s, path);
    fail("json_schema: unknown type '{}' at {}", t, path.empty() ? "/" : path);
  }

  int count(const ojson& s, const char* k, int dflt, const std::string& path) {
    if (!s.contains(k)) return dflt;
    if (!s[k].is_number_integer() || s[k].get<int64_t>() < 0 || s[k].get<int64_t>() > 100000)
      fail("json_schema: {} at {} must be a non-negative integer", k, path.empty() ? "/" : path);
    return int(s[k].get<int64_t>());
  }

  Expr string_of(const ojson& s, const std::string& path) {
    const bool has_len = s.contains("minLength") || s.contains("maxLength");
    if (s.contains("pattern") || s.contains("format")) {
      if (has_len) unsupported("minLength/maxLength together with pattern/format", path);
      std::string re;
      if (s.contains("pattern")) {
        if (!s["pattern"].is_string()) fail("json_schema: pattern at {} must be a string", path);
        re = s["pattern"].get<std::string>();
        // JSON schema patterns search; anchor what the pattern leaves open.
        const bool a0 = !re.empty() && re.front() == '^';
        const bool a1 = re.size() >= 2 && re.back() == '$' && re[re.size() - 2] != '\\';
        if (a0) re.erase(0, 1);
        if (a1) re.pop_back();
        re = (a0 ? "" : ".*") + std::string("(") + re + ")" + (a1 ? "" : ".*");
      } else {
        const std::string f = s["format"].is_string() ? s["format"].get<std::string>() : "";
        const char* r = format_regex(f);
        if (!r) unsupported(fmt::format("format '{}'", f), path);
        re = r;
      }
      const int rule = b.fresh_rule("string_pattern");
      b.define(rule, b.seq({b.literal("\""), regex_expr(b, re, true), b.literal("\"")}));
      return b.ref(rule);
    }
    if (!has_len) return b.ref(string_rule());
    const int lo = count(s, "minLength", 0, path), hi = count(s, "maxLength", -1, path);
    if (hi >= 0 && hi < lo) fail("json_schema: maxLength < minLength at {}", path);
    if (std::max(lo, hi) > 1000) unsupported("minLength/maxLength above 1000", path);
    const int rule = b.fresh_rule("string_len");
    b.define(rule, b.seq({b.literal("\""), b.repeat(string_char(), lo, hi), b.literal("\"")}));
    return b.ref(rule);
  }

  Expr object_of(const ojson& s, const std::string& path) {
    std::vector<std::pair<std::string, Expr>> props;  // key literal + value
    std::vector<bool> required;
    std::set<std::string> req;
    if (s.contains("required")) {
      if (!s["required"].is_array()) fail("json_schema: required at {} must be an array", path);
      for (const ojson& r : s["required"])
        if (r.is_string()) req.insert(r.get<std::string>());
    }
    if (s.contains("properties")) {
      if (!s["properties"].is_object()) fail("json_schema: properties at {} must be an object", path);
      for (auto it = s["properties"].begin(); it != s["properties"].end(); ++it) {
        const std::string pp = path + "/properties/" + it.key();
        props.emplace_back(ojson(it.key()).dump(), b.ref(rule_for(it.value(), pp)));
        required.push_back(req.count(it.key()) > 0);
        req.erase(it.key());
      }
    }
    Expr extra_value = -1;
    if (s.contains("additionalProperties")) {
      const ojson& ap = s["additionalProperties"];
      if (!(ap.is_boolean() && !ap.get<bool>())) extra_value = b.ref(rule_for(ap, path + "/additionalProperties"));
    }
    if (!req.empty() && extra_value < 0)
      fail("json_schema: required property '{}' at {} is not among the properties", *req.begin(), path.empty() ? "/" : path);
    if (!req.empty()) unsupported("required properties that are not listed in properties", path);
    const Expr sep = b.seq({b.literal(","), ws()});
    auto kv = [&](size_t i) { return b.seq({b.literal(props[i].first), b.literal(":"), ws(), props[i].second}); };
    Expr extra_tail_first = b.empty(), extra_tail_more = b.empty();
    if (extra_value >= 0) {
      const Expr member = b.seq({b.ref(string_rule()), b.literal(":"), ws(), extra_value});
      extra_tail_more = b.star(b.seq({sep, member}));
      extra_tail_first = b.opt(b.seq({member, b.star(b.seq({sep, member}))}));
    }
    // tail(i, first): properties i.. with `first` meaning nothing was written yet (no comma needed).
    std::map<std::pair<size_t, bool>, Expr> memo;
    std::function<Expr(size_t, bool)> tail = [&](size_t i, bool first) -> Expr {
      if (i == props.size()) return first ? extra_tail_first : extra_tail_more;
      auto key = std::make_pair(i, first);
      auto it = memo.find(key);
      if (it != memo.end()) return it->second;
      const Expr present = b.seq({first ? b.empty() : sep, kv(i), tail(i + 1, false)});
      Expr e;
      if (required[i]) {
        e = present;
      } else {
        // Optional: a rule, so the two branches share their continuations.
        const int r = b.fresh_rule("props");
        b.define(r, b.alt({present, tail(i + 1, first)}));
        e = b.ref(r);
      }
      memo.emplace(key, e);
      return e;
    };
    return b.seq({b.literal("{"), ws(), tail(0, true), ws(), b.literal("}")});
  }

  Expr array_of(const ojson& s, const std::string& path) {
    const Expr sep = b.seq({b.literal(","), ws()});
    std::vector<Expr> items;
    if (s.contains("prefixItems")) {
      if (!s["prefixItems"].is_array()) fail("json_schema: prefixItems at {} must be an array", path);
      if (s.contains("items") && !(s["items"].is_boolean() && !s["items"].get<bool>()))
        unsupported("prefixItems followed by more items", path);
      for (size_t i = 0; i < s["prefixItems"].size(); ++i) {
        if (i) items.push_back(sep);
        items.push_back(b.ref(rule_for(s["prefixItems"][i], fmt::format("{}/prefixItems/{}", path, i))));
      }
      return b.seq({b.literal("["), ws(), b.seq(items), ws(), b.literal("]")});
    }
    const Expr item = s.contains("items") ? b.ref(rule_for(s["items"], path + "/items")) : b.ref(any_value_rule());
    const int lo = count(s, "minItems", 0, path), hi = count(s, "maxItems", -1, path);
    if (hi >= 0 && hi < lo) fail("json_schema: maxItems < minItems at {}", path);
    if (std::max(lo, hi) > 1000) unsupported("minItems/maxItems above 1000", path);
    Expr body;
    if (hi == 0) {
      body = b.empty();
    } else {
      const Expr rest = b.repeat(b.seq({sep, item}), std::max(lo - 1, 0), hi < 0 ? -1 : hi - 1);
      body = b.seq({item, rest});
      if (lo == 0) body = b.opt(body);
    }
    return b.seq({b.literal("["), ws(), body, ws(), b.literal("]")});
  }
};

}  // namespace

int json_schema_rule(GrammarBuilder& b, const nlohmann::ordered_json& schema) {
  SchemaCompiler c{b, schema, {}};
  const int root = b.fresh_rule("root");
  b.define(root, c.value(schema, ""));
  return root;
}

int json_any_object_rule(GrammarBuilder& b) {
  ojson dummy;
  SchemaCompiler c{b, dummy, {}};
  c.any_value_rule();
  return b.rule("json_any_object");
}

}  // namespace ds
