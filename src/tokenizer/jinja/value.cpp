#include "tokenizer/jinja/value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <unordered_map>
#include <unordered_set>

#include "core/error.h"
#include "tokenizer/unicode_props.h"

namespace ds::jinja {

const Value* Dict::find(std::string_view key) const {
  for (const auto& [k, v] : items)
    if (k == key) return &v;
  return nullptr;
}

void Dict::set(const std::string& key, Value v) {
  for (auto& [k, old] : items)
    if (k == key) {
      old = std::move(v);
      return;
    }
  items.emplace_back(key, std::move(v));
}

double Value::as_number() const {
  if (is_int()) return double(as_int());
  if (is_float()) return std::get<double>(v);
  if (is_bool()) return as_bool() ? 1.0 : 0.0;
  fail("expected a number, got {}", type_name());
}

const char* Value::type_name() const {
  switch (v.index()) {
    case 0: return "Undefined";
    case 1: return "NoneType";
    case 2: return "bool";
    case 3: return "int";
    case 4: return "float";
    case 5: return "str";
    case 6: return "list";
    case 7: return "dict";
    case 8: return "function";
    default: return "Namespace";
  }
}

Value CallArgs::get(size_t i, const char* name, Value def) const {
  if (i < pos.size()) return pos[i];
  for (const auto& [k, v] : kw)
    if (k == name) return v;
  return def;
}

bool CallArgs::has(size_t i, const char* name) const {
  if (i < pos.size()) return true;
  for (const auto& [k, v] : kw)
    if (k == name) return true;
  return false;
}

bool truthy(const Value& v) {
  switch (v.v.index()) {
    case 0: case 1: return false;
    case 2: return v.as_bool();
    case 3: return v.as_int() != 0;
    case 4: return std::get<double>(v.v) != 0.0;
    case 5: return !v.str().empty();
    case 6: return !v.list().empty();
    case 7: return !v.dict().items.empty();
    default: return true;
  }
}

bool float_to_int(double d, int64_t& out) {
  if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0)) return false;
  out = int64_t(d);
  return true;
}

bool parse_int(std::string_view digits, int64_t& out) {
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), out);
  return !digits.empty() && ec == std::errc() && end == digits.data() + digits.size();
}

bool equals(const Value& a, const Value& b) {
  charge(1);
  const bool an = a.is_number() || a.is_bool(), bn = b.is_number() || b.is_bool();
  if (an && bn) {
    if ((a.is_int() || a.is_bool()) && (b.is_int() || b.is_bool()))
      return a.as_int_or_bool() == b.as_int_or_bool();
    return a.as_number() == b.as_number();
  }
  if (a.v.index() != b.v.index()) return false;
  if (a.is_undefined() || a.is_none()) return true;
  if (a.is_string()) return a.str() == b.str();
  if (a.is_list()) {
    const List &x = a.list(), &y = b.list();
    if (x.size() != y.size()) return false;
    for (size_t i = 0; i < x.size(); ++i)
      if (!equals(x[i], y[i])) return false;
    return true;
  }
  if (a.is_dict()) {
    const Dict &x = a.dict(), &y = b.dict();
    if (x.items.size() != y.items.size()) return false;
    for (const auto& [k, v] : x.items) {
      const Value* o = y.find(k);
      if (!o || !equals(v, *o)) return false;
    }
    return true;
  }
  if (a.is_function()) return &a.function() == &b.function();
  return &a.ns() == &b.ns();
}

int compare(const Value& a, const Value& b) {
  charge(1);
  if ((a.is_number() || a.is_bool()) && (b.is_number() || b.is_bool())) {
    double x = a.as_number(), y = b.as_number();
    return x < y ? -1 : (x > y ? 1 : 0);
  }
  if (a.is_string() && b.is_string()) return a.str().compare(b.str()) < 0 ? -1 : (a.str() == b.str() ? 0 : 1);
  if (a.is_list() && b.is_list()) {
    const List &x = a.list(), &y = b.list();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (equals(x[i], y[i])) continue;
      return compare(x[i], y[i]);
    }
    return x.size() < y.size() ? -1 : (x.size() > y.size() ? 1 : 0);
  }
  fail("'<' not supported between instances of '{}' and '{}'", a.type_name(), b.type_name());
}

std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  if (d == 0) return std::signbit(d) ? "-0.0" : "0.0";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string sci(buf, res.ptr);  // shortest round-trip digits: "-1.2345e+02"
  std::string sign;
  if (sci[0] == '-') sign = "-", sci.erase(0, 1);
  size_t epos = sci.find('e');
  int exp = std::stoi(sci.substr(epos + 1));
  std::string digits;
  for (char c : sci.substr(0, epos))
    if (c != '.') digits.push_back(c);
  if (exp >= -4 && exp < 16) {  // Python's repr uses fixed notation for 1e-4 <= |d| < 1e16
    std::string out;
    if (exp < 0) {
      out = "0." + std::string(size_t(-exp - 1), '0') + digits;
    } else if (size_t(exp) + 1 >= digits.size()) {
      out = digits + std::string(size_t(exp) + 1 - digits.size(), '0') + ".0";
    } else {
      out = digits.substr(0, size_t(exp) + 1) + "." + digits.substr(size_t(exp) + 1);
    }
    return sign + out;
  }
  std::string mant = digits.substr(0, 1);
  if (digits.size() > 1) mant += "." + digits.substr(1);
  char ebuf[16];
  std::snprintf(ebuf, sizeof ebuf, "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
  return sign + mant + ebuf;
}

namespace {

bool is_printable(uint32_t cp) {
  if (cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp < 0xA0)) return false;
  if (cp == 0xAD || cp == 0x2028 || cp == 0x2029 || (cp >= 0x200B && cp <= 0x200F)) return false;
  if (cp >= 0xD800 && cp <= 0xDFFF) return false;
  if (cp != ' ' && (unicode::flags(cp) & unicode::kPySpace)) return false;
  return true;
}

std::string repr_string(const std::string& s) {
  const bool has_single = s.find('\'') != std::string::npos;
  const bool has_double = s.find('"') != std::string::npos;
  const char q = has_single && !has_double ? '"' : '\'';
  std::string out(1, q);
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  for (size_t i = 0; i < s.size();) {
    uint32_t cp;
    int len = unicode::decode_utf8(p, s.size(), i, cp);
    if (cp == uint32_t(q) || cp == '\\') {
      out += '\\';
      out += char(cp);
    } else if (cp == '\n') {
      out += "\\n";
    } else if (cp == '\r') {
      out += "\\r";
    } else if (cp == '\t') {
      out += "\\t";
    } else if (!is_printable(cp)) {
      char buf[16];
      if (cp < 0x100) std::snprintf(buf, sizeof buf, "\\x%02x", cp);
      else if (cp < 0x10000) std::snprintf(buf, sizeof buf, "\\u%04x", cp);
      else std::snprintf(buf, sizeof buf, "\\U%08x", cp);
      out += buf;
    } else {
      out.append(s, i, size_t(len));
    }
    i += size_t(len);
  }
  out += q;
  return out;
}

void json_string(const std::string& s, bool ensure_ascii, std::string& out) {
  out += '"';
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  for (size_t i = 0; i < s.size();) {
    unsigned char c = p[i];
    if (c == '"') out += "\\\"";
    else if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c == '\b') out += "\\b";
    else if (c == '\f') out += "\\f";
    else if (c < 0x20) out += fmt::format("\\u{:04x}", c);
    else if (c < 0x80 || !ensure_ascii) out += char(c);
    else {
      uint32_t cp;
      int len = unicode::decode_utf8(p, s.size(), i, cp);
      if (cp >= 0x10000) {
        cp -= 0x10000;
        out += fmt::format("\\u{:04x}\\u{:04x}", 0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF));
      } else {
        out += fmt::format("\\u{:04x}", cp);
      }
      i += size_t(len);
      continue;
    }
    ++i;
  }
  out += '"';
}

void json_dump(const Value& v, const JsonOptions& o, int depth, std::string& out) {
  charge(1 + (v.is_string() ? v.str().size() : 0));
  auto newline = [&](int d) {
    if (!o.use_indent) return;
    charge(1 + uint64_t(d) * o.indent.size());
    out += '\n';
    for (int i = 0; i < d; ++i) out += o.indent;
  };
  if (v.is_none()) {
    out += "null";
  } else if (v.is_bool()) {
    out += v.as_bool() ? "true" : "false";
  } else if (v.is_int()) {
    out += std::to_string(v.as_int());
  } else if (v.is_float()) {
    double d = v.as_number();
    out += std::isnan(d) ? "NaN" : std::isinf(d) ? (d > 0 ? "Infinity" : "-Infinity") : float_repr(d);
  } else if (v.is_string()) {
    json_string(v.str(), o.ensure_ascii, out);
  } else if (v.is_list()) {
    const List& l = v.list();
    if (l.empty()) {
      out += "[]";
      return;
    }
    out += '[';
    for (size_t i = 0; i < l.size(); ++i) {
      if (i) out += o.item_sep;
      newline(depth + 1);
      json_dump(l[i], o, depth + 1, out);
    }
    newline(depth);
    out += ']';
  } else if (v.is_dict() || v.is_namespace()) {
    const Dict& d = v.is_dict() ? v.dict() : v.ns();
    if (d.items.empty()) {
      out += "{}";
      return;
    }
    std::vector<const std::pair<std::string, Value>*> items;
    for (const auto& kv : d.items) items.push_back(&kv);
    if (o.sort_keys)
      std::stable_sort(items.begin(), items.end(), [](auto* a, auto* b) { return a->first < b->first; });
    out += '{';
    for (size_t i = 0; i < items.size(); ++i) {
      if (i) out += o.item_sep;
      newline(depth + 1);
      json_string(items[i]->first, o.ensure_ascii, out);
      out += o.key_sep;
      json_dump(items[i]->second, o, depth + 1, out);
    }
    newline(depth);
    out += '}';
  } else {
    fail("Object of type {} is not JSON serializable", v.type_name());
  }
}

}  // namespace

std::string to_str(const Value& v) {
  if (v.is_undefined()) return "";
  if (v.is_string()) return v.str();
  return repr(v);
}

std::string repr(const Value& v) {
  charge(1 + (v.is_string() ? v.str().size() : 0));
  switch (v.v.index()) {
    case 0: return "";
    case 1: return "None";
    case 2: return v.as_bool() ? "True" : "False";
    case 3: return std::to_string(v.as_int());
    case 4: return float_repr(v.as_number());
    case 5: return repr_string(v.str());
    case 6: {
      const List& l = v.list();
      std::string out = l.tuple ? "(" : "[";
      for (size_t i = 0; i < l.size(); ++i) out += (i ? ", " : "") + repr(l[i]);
      if (l.tuple) return out + (l.size() == 1 ? ",)" : ")");
      return out + "]";
    }
    case 7: {
      std::string out = "{";
      const Dict& d = v.dict();
      for (size_t i = 0; i < d.items.size(); ++i)
        out += (i ? ", " : "") + repr_string(d.items[i].first) + ": " + repr(d.items[i].second);
      return out + "}";
    }
    case 8: return "<function " + v.function().name + ">";
    default: {
      Value as_dict;
      as_dict.v = std::make_shared<Dict>(v.ns());
      return "<Namespace " + repr(as_dict) + ">";
    }
  }
}

std::string to_json(const Value& v, const JsonOptions& opt) {
  std::string out;
  json_dump(v, opt, 0, out);
  return out;
}

namespace {
Value from_json_at(const nlohmann::ordered_json& j, bool as_data, int depth) {
  if (depth > kMaxValueDepth) fail("template input nested more than {} levels deep", kMaxValueDepth);
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null: return Value(None{});
    case nlohmann::ordered_json::value_t::boolean: return Value(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer: return Value(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: return Value(int64_t(j.get<uint64_t>()));
    case nlohmann::ordered_json::value_t::number_float: return Value(j.get<double>());
    case nlohmann::ordered_json::value_t::string:
      return as_data ? data_string(j.get<std::string>()) : Value(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      List l;
      l.reserve(j.size());
      for (const auto& e : j) l.push_back(from_json_at(e, as_data, depth + 1));
      return Value(std::move(l));
    }
    case nlohmann::ordered_json::value_t::object: {
      Dict d;
      d.data_keys = as_data;
      d.items.reserve(j.size());
      for (const auto& [k, e] : j.items()) d.items.emplace_back(k, from_json_at(e, as_data, depth + 1));
      return Value(std::move(d));
    }
    default: return Value(None{});
  }
}

// Past this depth a value counts as holding data (template-built values are not deeper in practice).
constexpr int kMaxScanDepth = 64;

// Values share sub-values freely (`{% set x = [x, x] %}` doubles without copying), so the walks
// below visit each list and dict once: a tree walk could take exponential time.
using Seen = std::unordered_set<const void*>;

const Dict* dict_of(const Value& v) { return v.is_dict() ? &v.dict() : v.is_namespace() ? &v.ns() : nullptr; }

bool holds_data_at(const Value& v, int depth, Seen& seen) {
  if (depth > kMaxScanDepth) return true;
  if (v.is_string()) return v.data && !v.data->empty();
  if (v.is_list()) {
    if (!seen.insert(&v.list()).second) return false;  // searched already, without a find
    charge(1 + v.list().size());
    for (const Value& x : v.list())
      if (holds_data_at(x, depth + 1, seen)) return true;
    return false;
  }
  const Dict* d = dict_of(v);
  if (!d) return false;
  if (d->data_keys) return true;
  if (!seen.insert(d).second) return false;
  charge(1 + d->items.size());
  for (const auto& [k, x] : d->items)
    if (holds_data_at(x, depth + 1, seen)) return true;
  return false;
}

// Copies keep the original's sharing (one copy per distinct list or dict).
Value mark_data_at(const Value& v, int depth, std::unordered_map<const void*, Value>& done) {
  if (depth > kMaxScanDepth) fail("value nested more than {} levels deep", kMaxScanDepth);
  if (v.is_string()) return data_string(v.str());
  if (!v.is_list() && !v.is_dict()) return v;
  const void* key = v.is_list() ? static_cast<const void*>(&v.list()) : &v.dict();
  if (auto it = done.find(key); it != done.end()) return it->second;
  Value out;
  if (v.is_list()) {
    charge(1 + v.list().size());
    List l;
    l.tuple = v.list().tuple;
    l.reserve(v.list().size());
    for (const Value& x : v.list()) l.push_back(mark_data_at(x, depth + 1, done));
    out = Value(std::move(l));
  } else {
    charge(1 + v.dict().items.size());
    Dict d;
    d.data_keys = true;
    for (const auto& [k, x] : v.dict().items) d.items.emplace_back(k, mark_data_at(x, depth + 1, done));
    out = Value(std::move(d));
  }
  done.emplace(key, out);
  return out;
}

// The nesting depth of v (1 for a scalar), failing past kMaxValueDepth or when target is reachable.
int storable_depth(const Value& v, const Dict* target, int depth, std::unordered_map<const void*, int>& memo) {
  if (depth > kMaxValueDepth) fail("value nested more than {} levels deep", kMaxValueDepth);
  const void* key = v.is_list() ? static_cast<const void*>(&v.list()) : dict_of(v);
  if (!key) return 1;
  if (key == target) fail("cannot store a namespace inside itself");
  if (auto it = memo.find(key); it != memo.end()) {
    if (depth + it->second - 1 > kMaxValueDepth) fail("value nested more than {} levels deep", kMaxValueDepth);
    return it->second;
  }
  int deepest = 0;
  if (v.is_list()) {
    charge(1 + v.list().size());
    for (const Value& x : v.list()) deepest = std::max(deepest, storable_depth(x, target, depth + 1, memo));
  } else {
    charge(1 + dict_of(v)->items.size());
    for (const auto& [k, x] : dict_of(v)->items) deepest = std::max(deepest, storable_depth(x, target, depth + 1, memo));
  }
  memo.emplace(key, deepest + 1);
  return deepest + 1;
}

thread_local RenderBudget* g_budget = nullptr;
uint64_t g_render_budget = uint64_t(1) << 30;
}  // namespace

Value from_json(const nlohmann::ordered_json& j, bool as_data) { return from_json_at(j, as_data, 0); }

bool holds_data(const Value& v) {
  Seen seen;
  return holds_data_at(v, 0, seen);
}

Value mark_data(const Value& v) {
  std::unordered_map<const void*, Value> done;
  return mark_data_at(v, 0, done);
}

void check_storable(const Value& v, const Dict* target) {
  std::unordered_map<const void*, int> memo;
  storable_depth(v, target, 1, memo);
}

RenderBudget::RenderBudget(uint64_t units) : total(units), left(units), outer(g_budget) { g_budget = this; }
RenderBudget::~RenderBudget() { g_budget = outer; }

void charge(uint64_t units) {
  RenderBudget* b = g_budget;
  if (!b) return;
  if (units > b->left) {
    b->left = 0;
    fail("template rendering exceeded its work budget ({} steps): a runaway loop or value", b->total);
  }
  b->left -= units;
}

uint64_t render_budget() { return g_render_budget; }
void set_render_budget(uint64_t units) { g_render_budget = units; }

Value data_string(std::string s) {
  Value r(std::move(s));
  if (!r.str().empty()) r.data = std::make_shared<const DataSpans>(DataSpans{{0, r.str().size()}});
  return r;
}

void Rendered::add_span(size_t b, size_t e) {
  if (b >= e) return;
  if (!data.empty() && data.back().second >= b) data.back().second = std::max(data.back().second, e);
  else data.emplace_back(b, e);
}

void Rendered::append(const Value& v) {
  const size_t base = text.size();
  if (v.is_string()) {
    charge(v.str().size());
    text += v.str();
    if (v.data)
      for (const auto& [b, e] : *v.data) add_span(base + b, base + e);
    return;
  }
  text += to_str(v);
  charge(text.size() - base);
  if (holds_data(v)) add_span(base, text.size());
}

Value with_spans(Rendered r) {
  Value v(std::move(r.text));
  if (!r.data.empty()) v.data = std::make_shared<const DataSpans>(std::move(r.data));
  return v;
}

Value concat(const Value& a, const Value& b) {
  Rendered r;
  r.append(a);
  r.append(b);
  return with_spans(std::move(r));
}

std::vector<std::string> utf8_chars(const std::string& s) {
  std::vector<std::string> out;
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  for (size_t i = 0; i < s.size();) {
    uint32_t cp;
    int len = unicode::decode_utf8(p, s.size(), i, cp);
    out.emplace_back(s, i, size_t(len));
    i += size_t(len);
  }
  return out;
}

std::vector<Value> iterate(const Value& v) {
  if (v.is_undefined()) return {};
  charge(1 + (v.is_string() ? v.str().size() : 0));
  if (v.is_list()) return v.list();
  if (v.is_dict()) {
    std::vector<Value> keys;
    for (const auto& [k, x] : v.dict().items) keys.push_back(v.dict().data_keys ? data_string(k) : Value(k));
    return keys;
  }
  if (v.is_string()) {
    const bool data = v.data && !v.data->empty();  // a character of a partly-data string counts as data
    std::vector<Value> chars;
    for (auto& c : utf8_chars(v.str())) chars.push_back(data ? data_string(std::move(c)) : Value(std::move(c)));
    return chars;
  }
  fail("'{}' object is not iterable", v.type_name());
}

size_t length(const Value& v) {
  if (v.is_undefined()) return 0;
  if (v.is_string()) return unicode::utf8_length(v.str());
  if (v.is_list()) return v.list().size();
  if (v.is_dict()) return v.dict().items.size();
  fail("object of type '{}' has no len()", v.type_name());
}

bool py_isspace(uint32_t cp) { return (unicode::flags(cp) & unicode::kPySpace) != 0; }

std::string py_strip(const std::string& s, const Value& chars, bool left, bool right) {
  std::vector<std::string> cs = utf8_chars(s);
  std::vector<std::string> set;
  const bool custom = chars.is_string();
  if (custom) set = utf8_chars(chars.str());
  auto strip_it = [&](const std::string& c) {
    if (custom) return std::find(set.begin(), set.end(), c) != set.end();
    uint32_t cp;
    unicode::decode_utf8(reinterpret_cast<const unsigned char*>(c.data()), c.size(), 0, cp);
    return py_isspace(cp);
  };
  size_t b = 0, e = cs.size();
  if (left)
    while (b < e && strip_it(cs[b])) ++b;
  if (right)
    while (e > b && strip_it(cs[e - 1])) --e;
  std::string out;
  for (size_t i = b; i < e; ++i) out += cs[i];
  return out;
}

}  // namespace ds::jinja
