// Values of the chat-template interpreter, with Python semantics where Hugging Face's jinja2
// rendering shows them: truthiness, equality, str() / repr() of lists and dicts, json.dumps for
// `tojson`. Lists and dicts are shared by reference (as Python objects are); dicts keep insertion
// order. Strings are UTF-8; lengths and indices count code points, as Python str does.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace ds::jinja {

struct Value;

// A Python list, or a tuple when `tuple` is set (only printing differs: "(a, b)").
struct List : std::vector<Value> {
  using std::vector<Value>::vector;
  List() = default;
  List(std::vector<Value> v, bool is_tuple = false);  // defined below Value (clang needs it complete)
  bool tuple = false;
};

// Byte ranges [begin, end) of a string that came from request data (chat messages, tools, template
// kwargs) rather than from the template: the tokenizer encodes them with special tokens disabled, so
// "<|im_end|>" typed by a user stays text. Sorted, disjoint.
using DataSpans = std::vector<std::pair<size_t, size_t>>;

struct Dict {
  std::vector<std::pair<std::string, Value>> items;
  bool data_keys = false;  // the keys came from request data (iterating yields data strings)
  const Value* find(std::string_view key) const;
  void set(const std::string& key, Value v);
};

// A callable: builtin global, bound method, or macro. `line` is where the call happens.
struct CallArgs;
struct Function {
  std::string name;
  std::function<Value(CallArgs&)> fn;
  bool macro = false;  // a template macro: its result carries its own data spans
};

struct Undefined {
  std::string name;  // what was looked up, for error messages
};
struct None {};
struct Namespace {
  std::shared_ptr<Dict> attrs;
};

struct Value {
  using Storage = std::variant<Undefined, None, bool, int64_t, double, std::string,
                               std::shared_ptr<List>, std::shared_ptr<Dict>,
                               std::shared_ptr<const Function>, Namespace>;
  Storage v;
  std::shared_ptr<const DataSpans> data;  // strings only: the parts that are request data (null: none)

  Value() : v(Undefined{}) {}
  Value(None) : v(None{}) {}
  Value(bool b) : v(b) {}
  Value(int i) : v(int64_t(i)) {}
  Value(int64_t i) : v(i) {}
  Value(double d) : v(d) {}
  Value(std::string s) : v(std::move(s)) {}
  Value(const char* s) : v(std::string(s)) {}
  Value(List l) : v(std::make_shared<List>(std::move(l))) {}
  Value(Dict d) : v(std::make_shared<Dict>(std::move(d))) {}
  Value(std::shared_ptr<const Function> f) : v(std::move(f)) {}
  Value(Namespace n) : v(std::move(n)) {}
  static Value undefined(std::string name) {
    Value r;
    r.v = Undefined{std::move(name)};
    return r;
  }

  bool is_undefined() const { return std::holds_alternative<Undefined>(v); }
  bool is_none() const { return std::holds_alternative<None>(v); }
  bool is_bool() const { return std::holds_alternative<bool>(v); }
  bool is_int() const { return std::holds_alternative<int64_t>(v); }
  bool is_float() const { return std::holds_alternative<double>(v); }
  bool is_number() const { return is_int() || is_float(); }  // bool excluded (jinja's `number`)
  bool is_string() const { return std::holds_alternative<std::string>(v); }
  bool is_list() const { return std::holds_alternative<std::shared_ptr<List>>(v); }
  bool is_dict() const { return std::holds_alternative<std::shared_ptr<Dict>>(v); }
  bool is_function() const { return std::holds_alternative<std::shared_ptr<const Function>>(v); }
  bool is_namespace() const { return std::holds_alternative<Namespace>(v); }

  bool as_bool() const { return std::get<bool>(v); }
  int64_t as_int() const { return std::get<int64_t>(v); }
  int64_t as_int_or_bool() const { return is_bool() ? int64_t(as_bool()) : as_int(); }  // exact
  double as_number() const;  // int, float or bool as double
  const std::string& str() const { return std::get<std::string>(v); }
  const List& list() const { return *std::get<std::shared_ptr<List>>(v); }
  const Dict& dict() const { return *std::get<std::shared_ptr<Dict>>(v); }
  const Function& function() const { return *std::get<std::shared_ptr<const Function>>(v); }
  Dict& ns() const { return *std::get<Namespace>(v).attrs; }

  const char* type_name() const;  // Python's name: 'str', 'list', 'dict', 'NoneType', ...
};

inline List::List(std::vector<Value> v, bool is_tuple) : std::vector<Value>(std::move(v)), tuple(is_tuple) {}

// Request-data tracking (see DataSpans). Rendering output: template text is markup, values print
// with their spans; operations whose result mixes inputs in ways not tracked byte by byte mark the
// whole result as data (data never turns into markup; markup may turn into data).
struct Rendered {
  std::string text;
  DataSpans data;
  void append(const Value& v);  // str(v); its data spans (a non-string holding data: all of it)
  void append_markup(const std::string& s) { text += s; }
  void add_span(size_t b, size_t e);  // merges with the last span when adjacent
};
Value data_string(std::string s);             // a string that is all data
Value with_spans(Rendered r);                 // a string value carrying r's spans
bool holds_data(const Value& v);              // any data inside (strings, keys; bounded depth)
// Throws unless v may be stored as an attribute of the namespace whose attributes are `target`:
// target must not be reachable from v (namespaces are the only mutable values, so this keeps every
// value acyclic: printing, comparing and freeing values all recurse) and v must not be nested deeper
// than kMaxValueDepth (a loop that wraps a namespace attribute in a list each turn would otherwise
// build values too deep to print or free).
void check_storable(const Value& v, const Dict* target);

// The work budget of one rendering, so that no template or template input runs unbounded: each
// statement, expression and loop turn is charged, and so is every byte or item a value operation
// produces or walks. Past the budget, charge() throws ds::Error. Rendering installs a budget for its
// thread (RenderBudget); outside a rendering charge() does nothing.
void charge(uint64_t units);
struct RenderBudget {
  explicit RenderBudget(uint64_t units);
  ~RenderBudget();
  RenderBudget(const RenderBudget&) = delete;
  RenderBudget& operator=(const RenderBudget&) = delete;
  uint64_t total, left;
  RenderBudget* outer;
};
// The budget each rendering gets: 2^30 units by default (a chat template over a million-token
// conversation uses a few percent of it). The fuzz harness lowers it to keep each input fast.
uint64_t render_budget();
void set_render_budget(uint64_t units);
Value mark_data(const Value& v);              // a copy whose strings (and dict keys) are all data
Value concat(const Value& a, const Value& b);  // str(a) + str(b) with both sides' spans

struct CallArgs {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;
  // The i-th positional argument, else the keyword `name`, else `def`.
  Value get(size_t i, const char* name, Value def = Value()) const;
  bool has(size_t i, const char* name) const;
};

// A float as an int64 (truncated) when it is in range: false for NaN, infinities and beyond ±2^63.
bool float_to_int(double d, int64_t& out);
// Decimal digits as an int64: false when the text is not all digits or the value is out of range.
bool parse_int(std::string_view digits, int64_t& out);

bool truthy(const Value& v);
bool equals(const Value& a, const Value& b);
int compare(const Value& a, const Value& b);  // <0, 0, >0; throws for unorderable types

std::string to_str(const Value& v);   // Python str() (Undefined → "")
std::string repr(const Value& v);     // Python repr()
std::string float_repr(double d);     // Python repr(float)

struct JsonOptions {
  std::string indent;  // empty: no newlines
  bool use_indent = false;
  std::string item_sep = ", ";
  std::string key_sep = ": ";
  bool sort_keys = false;
  bool ensure_ascii = false;
};
std::string to_json(const Value& v, const JsonOptions& opt);  // Python json.dumps

// as_data: every string and object key is request data. Throws ds::Error for JSON nested deeper
// than kMaxValueDepth (callers limit depth when parsing; this keeps the conversion bounded anyway).
constexpr int kMaxValueDepth = 128;
Value from_json(const nlohmann::ordered_json& j, bool as_data = false);

// Python sequences: list items, dict keys, string characters (throws for other types; Undefined
// iterates as empty).
std::vector<Value> iterate(const Value& v);
size_t length(const Value& v);

// Code-point helpers for UTF-8 strings.
std::vector<std::string> utf8_chars(const std::string& s);
bool py_isspace(uint32_t cp);
std::string py_strip(const std::string& s, const Value& chars, bool left, bool right);

}  // namespace ds::jinja
