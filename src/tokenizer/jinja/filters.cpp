// Filters and tests (jinja2's builtins as chat templates use them; `tojson` is Hugging Face's).
#include <algorithm>
#include <cmath>
#include <unordered_map>

#include "core/error.h"
#include "tokenizer/jinja/builtins.h"

namespace ds::jinja {
namespace {

using FilterFn = Value (*)(const Value&, const CallArgs&);
using TestFn = bool (*)(const Value&, const CallArgs&);

// Attribute path "a.b.0" as jinja2's make_attrgetter resolves it.
Value attr_path(const Value& v, const Value& path) {
  if (path.is_int()) return get_item(v, path);
  Value cur = v;
  std::string p = to_str(path);
  size_t b = 0;
  for (;;) {
    size_t e = p.find('.', b);
    std::string part = p.substr(b, e == std::string::npos ? std::string::npos : e - b);
    int64_t index = 0;
    cur = parse_int(part, index) ? get_item(cur, Value(index)) : get_item(cur, Value(part));
    if (e == std::string::npos) return cur;
    if (cur.is_undefined()) return cur;
    b = e + 1;
  }
}

CallArgs rest_args(const CallArgs& a, size_t from) {
  CallArgs r;
  if (from < a.pos.size()) r.pos.assign(a.pos.begin() + long(from), a.pos.end());
  return r;
}

Value f_tojson(const Value& v, const CallArgs& a) {
  JsonOptions o;
  o.ensure_ascii = truthy(a.get(0, "ensure_ascii", Value(false)));
  Value indent = a.get(1, "indent", Value(None{}));
  if (indent.is_int()) {
    o.use_indent = true;
    const int64_t n = std::max<int64_t>(0, indent.as_int());
    charge(uint64_t(n));  // before allocating: `indent=10**12` is the budget's error, not out of memory
    o.indent = std::string(size_t(n), ' ');
  } else if (indent.is_string()) {
    o.use_indent = true;
    o.indent = indent.str();
  }
  if (o.use_indent) o.item_sep = ",";
  Value sep = a.get(2, "separators", Value(None{}));
  if (sep.is_list()) {
    if (sep.list().size() != 2) fail("separators must be a pair");
    o.item_sep = to_str(sep.list()[0]);
    o.key_sep = to_str(sep.list()[1]);
  }
  o.sort_keys = truthy(a.get(3, "sort_keys", Value(false)));
  return Value(to_json(v, o));
}

Value f_length(const Value& v, const CallArgs&) { return Value(int64_t(length(v))); }
Value f_string(const Value& v, const CallArgs&) { return Value(to_str(v)); }
Value f_trim(const Value& v, const CallArgs& a) {
  return Value(py_strip(to_str(v), a.get(0, "chars", Value(None{})), true, true));
}
Value f_lower(const Value& v, const CallArgs&) { return Value(ascii_lower(to_str(v))); }
Value f_upper(const Value& v, const CallArgs&) { return Value(ascii_upper(to_str(v))); }
Value f_capitalize(const Value& v, const CallArgs&) {
  std::string s = ascii_lower(to_str(v));
  if (!s.empty()) s[0] = char(std::toupper(uint8_t(s[0])));
  return Value(s);
}
Value f_title(const Value& v, const CallArgs&) {  // jinja2: words start after [-\s({[<]
  std::string s = to_str(v), out;
  bool start = true;
  for (char c : s) {
    bool sep = c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || std::isspace(uint8_t(c));
    out += sep ? c : start ? char(std::toupper(uint8_t(c))) : char(std::tolower(uint8_t(c)));
    start = sep;
  }
  return Value(out);
}

Value f_join(const Value& v, const CallArgs& a) {
  std::string sep = to_str(a.get(0, "d", Value("")));
  Value attr = a.get(1, "attribute", Value(None{}));
  std::string out;
  bool first = true;
  for (const Value& x : iterate(v)) {
    if (!first) out += sep;
    out += to_str(attr.is_none() ? x : attr_path(x, attr));
    first = false;
  }
  return Value(out);
}

Value f_default(const Value& v, const CallArgs& a) {
  bool boolean = truthy(a.get(1, "boolean", Value(false)));
  if (v.is_undefined() || (boolean && !truthy(v))) return a.get(0, "default_value", Value(""));
  return v;
}

Value f_items(const Value& v, const CallArgs&) {
  if (v.is_undefined()) return Value(List{});
  if (!v.is_dict()) fail("can only get item pairs from a mapping");
  List l;
  for (const auto& [k, x] : v.dict().items) l.emplace_back(List({Value(k), x}, true));
  return Value(std::move(l));
}

Value f_first(const Value& v, const CallArgs&) {
  auto items = iterate(v);
  return items.empty() ? Value::undefined("No first item, sequence was empty.") : items.front();
}
Value f_last(const Value& v, const CallArgs&) {
  auto items = iterate(v);
  return items.empty() ? Value::undefined("No last item, sequence was empty.") : items.back();
}

Value f_replace(const Value& v, const CallArgs& a) {
  std::string s = to_str(v), old = to_str(a.get(0, "old")), rep = to_str(a.get(1, "new"));
  Value count = a.get(2, "count", Value(None{}));
  int64_t limit = count.is_int() ? count.as_int() : -1;
  std::string out;
  int64_t done = 0;
  if (old.empty()) {  // Python inserts `new` around every character
    auto chars = utf8_chars(s);
    for (size_t i = 0; i <= chars.size(); ++i) {
      if (limit < 0 || done < limit) out += rep, ++done;
      if (i < chars.size()) out += chars[i];
    }
    return Value(out);
  }
  size_t pos = 0;
  for (;;) {
    size_t at = s.find(old, pos);
    if (at == std::string::npos || (limit >= 0 && done >= limit)) break;
    out.append(s, pos, at - pos);
    out += rep;
    pos = at + old.size();
    ++done;
  }
  out.append(s, pos);
  return Value(out);
}

Value f_list(const Value& v, const CallArgs&) { return Value(iterate(v)); }

Value select_impl(const Value& v, const CallArgs& a, bool by_attr, bool keep) {
  List out;
  size_t test_at = by_attr ? 1 : 0;
  Value attr = by_attr ? a.get(0, "attribute") : Value();
  const bool with_test = a.pos.size() > test_at;
  std::string test = with_test ? to_str(a.pos[test_at]) : "";
  if (with_test && !has_test(test)) fail("no test named '{}'", test);
  CallArgs targs = rest_args(a, test_at + 1);
  for (const Value& x : iterate(v)) {
    Value subject = by_attr ? attr_path(x, attr) : x;
    bool ok = with_test ? apply_test(test, subject, targs) : truthy(subject);
    if (ok == keep) out.push_back(x);
  }
  return Value(std::move(out));
}
Value f_selectattr(const Value& v, const CallArgs& a) { return select_impl(v, a, true, true); }
Value f_rejectattr(const Value& v, const CallArgs& a) { return select_impl(v, a, true, false); }
Value f_select(const Value& v, const CallArgs& a) { return select_impl(v, a, false, true); }
Value f_reject(const Value& v, const CallArgs& a) { return select_impl(v, a, false, false); }

Value f_map(const Value& v, const CallArgs& a) {
  List out;
  Value attr = a.get(99, "attribute");
  if (!attr.is_undefined()) {
    Value def = a.get(99, "default");
    for (const Value& x : iterate(v)) {
      Value r = attr_path(x, attr);
      out.push_back(r.is_undefined() && !def.is_undefined() ? def : r);
    }
    return Value(std::move(out));
  }
  if (a.pos.empty()) fail("map requires a filter name or attribute=");
  std::string filter = to_str(a.pos[0]);
  if (!has_filter(filter)) fail("no filter named '{}'", filter);
  CallArgs fargs = rest_args(a, 1);
  fargs.kw = a.kw;
  for (const Value& x : iterate(v)) out.push_back(apply_filter(filter, x, fargs));
  return Value(std::move(out));
}

Value f_reverse(const Value& v, const CallArgs&) {
  if (v.is_string()) {
    auto chars = utf8_chars(v.str());
    std::string out;
    for (size_t i = chars.size(); i-- > 0;) out += chars[i];
    return Value(out);
  }
  auto items = iterate(v);
  std::reverse(items.begin(), items.end());
  return Value(List(std::move(items)));
}

Value f_int(const Value& v, const CallArgs& a) {
  if (v.is_int()) return v;
  int64_t r = 0;
  if (v.is_float()) return float_to_int(v.as_number(), r) ? Value(r) : a.get(0, "default", Value(int64_t(0)));
  if (v.is_bool()) return Value(int64_t(v.as_bool()));
  if (v.is_string()) {
    try {
      size_t used = 0;
      std::string s = py_strip(v.str(), Value(None{}), true, true);
      r = std::stoll(s, &used);
      if (used == s.size()) return Value(r);
      if (float_to_int(std::stod(s), r)) return Value(r);
    } catch (const std::exception&) {
    }
  }
  return a.get(0, "default", Value(int64_t(0)));
}

Value f_float(const Value& v, const CallArgs& a) {
  if (v.is_number() || v.is_bool()) return Value(v.as_number());
  if (v.is_string()) {
    try {
      return Value(std::stod(v.str()));
    } catch (const std::exception&) {
    }
  }
  return a.get(0, "default", Value(0.0));
}

Value f_abs(const Value& v, const CallArgs&) {
  if (v.is_int() && v.as_int() == INT64_MIN) fail("integer overflow in abs");
  if (v.is_int()) return Value(int64_t(std::llabs(v.as_int())));
  return Value(std::fabs(v.as_number()));
}

Value f_round(const Value& v, const CallArgs& a) {
  Value p = a.get(0, "precision", Value(int64_t(0)));
  std::string method = to_str(a.get(1, "method", Value("common")));
  double scale = std::pow(10.0, double(p.is_int() ? p.as_int() : 0));
  double x = v.as_number() * scale;
  // Python's round(): halves go to even.
  x = method == "ceil" ? std::ceil(x) : method == "floor" ? std::floor(x) : std::nearbyint(x);
  return Value(x / scale);
}

Value f_indent(const Value& v, const CallArgs& a) {
  Value w = a.get(0, "width", Value(int64_t(4)));
  std::string pad = w.is_string() ? w.str() : std::string(size_t(w.is_int() ? std::max<int64_t>(0, w.as_int()) : 4), ' ');
  bool first = truthy(a.get(1, "first", Value(false))), blank = truthy(a.get(2, "blank", Value(false)));
  std::string s = to_str(v) + "\n";
  std::vector<std::string> lines;
  for (size_t b = 0; b < s.size();) {
    size_t e = s.find('\n', b);
    lines.push_back(s.substr(b, e - b));
    b = e + 1;
  }
  std::string out = lines.empty() ? "" : lines[0];
  for (size_t i = 1; i < lines.size(); ++i) out += "\n" + ((blank || !lines[i].empty()) ? pad + lines[i] : lines[i]);
  if (first) out = pad + out;
  return Value(out);
}

Value f_safe(const Value& v, const CallArgs&) { return v; }

Value f_escape(const Value& v, const CallArgs&) {
  std::string out;
  for (char c : to_str(v)) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return Value(out);
}

Value sort_key(const Value& x, const Value& attr, bool case_sensitive) {
  Value k = attr.is_none() || attr.is_undefined() ? x : attr_path(x, attr);
  if (!case_sensitive && k.is_string()) return Value(ascii_lower(k.str()));
  return k;
}

Value f_sort(const Value& v, const CallArgs& a) {
  bool rev = truthy(a.get(0, "reverse", Value(false)));
  bool cs = truthy(a.get(1, "case_sensitive", Value(false)));
  Value attr = a.get(2, "attribute", Value(None{}));
  auto items = iterate(v);
  std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) {
    int c = compare(sort_key(x, attr, cs), sort_key(y, attr, cs));
    return rev ? c > 0 : c < 0;
  });
  return Value(List(std::move(items)));
}

Value f_dictsort(const Value& v, const CallArgs& a) {
  bool cs = truthy(a.get(0, "case_sensitive", Value(false)));
  bool by_value = to_str(a.get(1, "by", Value("key"))) == "value";
  bool rev = truthy(a.get(2, "reverse", Value(false)));
  List pairs = f_items(v, {}).list();
  std::stable_sort(pairs.begin(), pairs.end(), [&](const Value& x, const Value& y) {
    const Value& kx = x.list()[by_value ? 1 : 0];
    const Value& ky = y.list()[by_value ? 1 : 0];
    int c = compare(sort_key(kx, Value(None{}), cs), sort_key(ky, Value(None{}), cs));
    return rev ? c > 0 : c < 0;
  });
  return Value(std::move(pairs));
}

Value f_unique(const Value& v, const CallArgs& a) {
  bool cs = truthy(a.get(0, "case_sensitive", Value(false)));
  Value attr = a.get(1, "attribute", Value(None{}));
  List out, seen;
  for (const Value& x : iterate(v)) {
    Value k = sort_key(x, attr, cs);
    if (std::any_of(seen.begin(), seen.end(), [&](const Value& s) { return equals(s, k); })) continue;
    seen.push_back(k);
    out.push_back(x);
  }
  return Value(std::move(out));
}

Value minmax(const Value& v, const CallArgs& a, bool want_max) {
  bool cs = truthy(a.get(0, "case_sensitive", Value(false)));
  Value attr = a.get(1, "attribute", Value(None{}));
  auto items = iterate(v);
  if (items.empty()) return Value::undefined("No aggregated item, sequence was empty.");
  size_t best = 0;
  for (size_t i = 1; i < items.size(); ++i) {
    int c = compare(sort_key(items[i], attr, cs), sort_key(items[best], attr, cs));
    if (want_max ? c > 0 : c < 0) best = i;
  }
  return items[best];
}
Value f_min(const Value& v, const CallArgs& a) { return minmax(v, a, false); }
Value f_max(const Value& v, const CallArgs& a) { return minmax(v, a, true); }

Value f_sum(const Value& v, const CallArgs& a) {
  Value attr = a.get(0, "attribute", Value(None{}));
  Value total = a.get(1, "start", Value(int64_t(0)));
  for (const Value& x : iterate(v)) {
    Value y = attr.is_none() ? x : attr_path(x, attr);
    if (total.is_int() && y.is_int()) total = Value(total.as_int() + y.as_int());
    else total = Value(total.as_number() + y.as_number());
  }
  return total;
}

Value f_attr(const Value& v, const CallArgs& a) { return get_attr(v, to_str(a.get(0, "name"))); }

Value f_wordcount(const Value& v, const CallArgs&) {
  int64_t n = 0;
  bool in_word = false;
  for (char c : to_str(v)) {
    bool w = std::isalnum(uint8_t(c)) || c == '_' || uint8_t(c) >= 0x80;
    if (w && !in_word) ++n;
    in_word = w;
  }
  return Value(n);
}

const std::unordered_map<std::string, FilterFn>& filters() {
  static const std::unordered_map<std::string, FilterFn> table = {
      {"tojson", f_tojson}, {"length", f_length}, {"count", f_length}, {"string", f_string},
      {"trim", f_trim}, {"lower", f_lower}, {"upper", f_upper}, {"capitalize", f_capitalize},
      {"title", f_title}, {"join", f_join}, {"default", f_default}, {"d", f_default},
      {"items", f_items}, {"first", f_first}, {"last", f_last}, {"replace", f_replace},
      {"list", f_list}, {"selectattr", f_selectattr}, {"rejectattr", f_rejectattr},
      {"select", f_select}, {"reject", f_reject}, {"map", f_map}, {"reverse", f_reverse},
      {"int", f_int}, {"float", f_float}, {"abs", f_abs}, {"round", f_round},
      {"indent", f_indent}, {"safe", f_safe}, {"escape", f_escape}, {"e", f_escape},
      {"forceescape", f_escape}, {"sort", f_sort}, {"dictsort", f_dictsort}, {"unique", f_unique},
      {"min", f_min}, {"max", f_max}, {"sum", f_sum}, {"attr", f_attr}, {"wordcount", f_wordcount},
  };
  return table;
}

bool t_defined(const Value& v, const CallArgs&) { return !v.is_undefined(); }
bool t_undefined(const Value& v, const CallArgs&) { return v.is_undefined(); }
bool t_none(const Value& v, const CallArgs&) { return v.is_none(); }
bool t_boolean(const Value& v, const CallArgs&) { return v.is_bool(); }
bool t_true(const Value& v, const CallArgs&) { return v.is_bool() && v.as_bool(); }
bool t_false(const Value& v, const CallArgs&) { return v.is_bool() && !v.as_bool(); }
bool t_integer(const Value& v, const CallArgs&) { return v.is_int(); }
bool t_float(const Value& v, const CallArgs&) { return v.is_float(); }
bool t_number(const Value& v, const CallArgs&) { return v.is_number() || v.is_bool(); }
bool t_string(const Value& v, const CallArgs&) { return v.is_string(); }
bool t_mapping(const Value& v, const CallArgs&) { return v.is_dict(); }
bool t_iterable(const Value& v, const CallArgs&) {
  return v.is_list() || v.is_dict() || v.is_string() || v.is_undefined();
}
bool t_sequence(const Value& v, const CallArgs&) { return v.is_list() || v.is_dict() || v.is_string(); }
bool t_callable(const Value& v, const CallArgs&) { return v.is_function(); }
bool t_odd(const Value& v, const CallArgs&) { return v.is_int() && (v.as_int() % 2 != 0); }
bool t_even(const Value& v, const CallArgs&) { return v.is_int() && (v.as_int() % 2 == 0); }
bool t_divisibleby(const Value& v, const CallArgs& a) {
  Value n = a.get(0, "num");
  if (!v.is_int() || !n.is_int() || n.as_int() == 0) fail("divisibleby needs integers");
  return v.as_int() % n.as_int() == 0;
}
bool t_eq(const Value& v, const CallArgs& a) { return equals(v, a.get(0, "other")); }
bool t_ne(const Value& v, const CallArgs& a) { return !equals(v, a.get(0, "other")); }
bool t_lt(const Value& v, const CallArgs& a) { return compare(v, a.get(0, "other")) < 0; }
bool t_le(const Value& v, const CallArgs& a) { return compare(v, a.get(0, "other")) <= 0; }
bool t_gt(const Value& v, const CallArgs& a) { return compare(v, a.get(0, "other")) > 0; }
bool t_ge(const Value& v, const CallArgs& a) { return compare(v, a.get(0, "other")) >= 0; }
bool t_in(const Value& v, const CallArgs& a) {
  Value seq = a.get(0, "seq");
  if (seq.is_string()) return v.is_string() && seq.str().find(v.str()) != std::string::npos;
  if (seq.is_dict()) return v.is_string() && seq.dict().find(v.str()) != nullptr;
  for (const Value& x : iterate(seq))
    if (equals(x, v)) return true;
  return false;
}
bool t_sameas(const Value& v, const CallArgs& a) {
  Value o = a.get(0, "other");
  if (v.v.index() != o.v.index()) return false;
  if (v.is_none() || v.is_undefined()) return true;
  if (v.is_bool()) return v.as_bool() == o.as_bool();
  if (v.is_list()) return &v.list() == &o.list();
  if (v.is_dict()) return &v.dict() == &o.dict();
  return equals(v, o);
}
bool t_lower(const Value& v, const CallArgs&) { return v.is_string() && ascii_lower(v.str()) == v.str(); }
bool t_upper(const Value& v, const CallArgs&) { return v.is_string() && ascii_upper(v.str()) == v.str(); }
bool t_escaped(const Value&, const CallArgs&) { return false; }

const std::unordered_map<std::string, TestFn>& tests() {
  static const std::unordered_map<std::string, TestFn> table = {
      {"defined", t_defined}, {"undefined", t_undefined}, {"none", t_none}, {"boolean", t_boolean},
      {"true", t_true}, {"false", t_false}, {"integer", t_integer}, {"float", t_float},
      {"number", t_number}, {"string", t_string}, {"mapping", t_mapping}, {"iterable", t_iterable},
      {"sequence", t_sequence}, {"callable", t_callable}, {"odd", t_odd}, {"even", t_even},
      {"divisibleby", t_divisibleby}, {"eq", t_eq}, {"equalto", t_eq}, {"==", t_eq}, {"ne", t_ne},
      {"!=", t_ne}, {"lt", t_lt}, {"lessthan", t_lt}, {"<", t_lt}, {"le", t_le}, {"<=", t_le},
      {"gt", t_gt}, {"greaterthan", t_gt}, {">", t_gt}, {"ge", t_ge}, {">=", t_ge}, {"in", t_in},
      {"sameas", t_sameas}, {"lower", t_lower}, {"upper", t_upper}, {"escaped", t_escaped},
  };
  return table;
}

}  // namespace

bool has_filter(const std::string& name) { return filters().count(name) != 0; }

Value apply_filter(const std::string& name, const Value& v, const CallArgs& args) {
  auto it = filters().find(name);
  if (it == filters().end()) fail("no filter named '{}'", name);
  return it->second(v, args);
}

bool has_test(const std::string& name) { return tests().count(name) != 0; }

bool apply_test(const std::string& name, const Value& v, const CallArgs& args) {
  auto it = tests().find(name);
  if (it == tests().end()) fail("no test named '{}'", name);
  return it->second(v, args);
}

}  // namespace ds::jinja
