// Attribute/item access, Python methods on str/dict/list, and the template globals.
#include <algorithm>
#include <ctime>

#include "core/error.h"
#include "tokenizer/jinja/builtins.h"
#include "tokenizer/unicode_props.h"

namespace ds::jinja {
namespace {

std::shared_ptr<const Function> fn(std::string name, std::function<Value(CallArgs&)> f) {
  return std::make_shared<const Function>(Function{std::move(name), std::move(f)});
}

const std::string& arg_str(const CallArgs& a, size_t i, const char* name) {
  static const std::string kEmpty;
  if (!a.has(i, name)) fail("missing argument '{}'", name);
  const Value* v = i < a.pos.size() ? &a.pos[i] : nullptr;
  if (!v)
    for (const auto& [k, x] : a.kw)
      if (k == name) v = &x;
  if (!v->is_string()) fail("argument '{}' must be a string, not {}", name, v->type_name());
  return v->str();
}

// Python str.split / rsplit.
List split(const std::string& s, const Value& sep, int64_t maxsplit, bool from_right) {
  List out;
  if (sep.is_none() || sep.is_undefined()) {
    std::vector<std::string> chars = utf8_chars(s);
    auto space = [&](size_t i) {
      uint32_t cp;
      unicode::decode_utf8(reinterpret_cast<const unsigned char*>(chars[i].data()), chars[i].size(), 0, cp);
      return py_isspace(cp);
    };
    std::vector<std::pair<size_t, size_t>> words;  // char ranges
    for (size_t i = 0; i < chars.size();) {
      while (i < chars.size() && space(i)) ++i;
      if (i >= chars.size()) break;
      size_t b = i;
      while (i < chars.size() && !space(i)) ++i;
      words.emplace_back(b, i);
    }
    auto join = [&](size_t b, size_t e) {
      std::string r;
      for (size_t i = b; i < e; ++i) r += chars[i];
      return r;
    };
    if (maxsplit < 0 || size_t(maxsplit) + 1 >= words.size()) {
      for (auto [b, e] : words) out.emplace_back(join(b, e));
    } else if (!from_right) {
      for (size_t k = 0; k < size_t(maxsplit); ++k) out.emplace_back(join(words[k].first, words[k].second));
      size_t e = chars.size();
      while (e > words[size_t(maxsplit)].first && space(e - 1)) --e;
      out.emplace_back(join(words[size_t(maxsplit)].first, e));
    } else {
      size_t first = words.size() - size_t(maxsplit);
      size_t b = 0;
      while (b < words[first - 1].second && space(b)) ++b;
      out.emplace_back(join(b, words[first - 1].second));
      for (size_t k = first; k < words.size(); ++k) out.emplace_back(join(words[k].first, words[k].second));
    }
    return out;
  }
  if (!sep.is_string()) fail("split() separator must be a string");
  const std::string& d = sep.str();
  if (d.empty()) fail("empty separator");
  std::vector<std::string> parts;
  for (size_t pos = 0;;) {
    size_t at = s.find(d, pos);
    if (at == std::string::npos) {
      parts.push_back(s.substr(pos));
      break;
    }
    parts.push_back(s.substr(pos, at - pos));
    pos = at + d.size();
  }
  if (maxsplit >= 0 && parts.size() > size_t(maxsplit) + 1) {
    std::vector<std::string> merged;
    if (!from_right) {
      merged.assign(parts.begin(), parts.begin() + maxsplit);
      std::string rest = parts[size_t(maxsplit)];
      for (size_t k = size_t(maxsplit) + 1; k < parts.size(); ++k) rest += d + parts[k];
      merged.push_back(rest);
    } else {
      size_t keep = parts.size() - size_t(maxsplit);
      std::string head = parts[0];
      for (size_t k = 1; k < keep; ++k) head += d + parts[k];
      merged.push_back(head);
      merged.insert(merged.end(), parts.begin() + long(keep), parts.end());
    }
    parts = std::move(merged);
  }
  for (auto& p : parts) out.emplace_back(std::move(p));
  return out;
}

List splitlines(const std::string& s, bool keepends) {
  List out;
  size_t b = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\n' && s[i] != '\r') continue;
    size_t e = i + (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n' ? 2 : 1);
    out.emplace_back(s.substr(b, (keepends ? e : i) - b));
    b = e;
    i = e - 1;
  }
  if (b < s.size()) out.emplace_back(s.substr(b));
  return out;
}

bool all_chars(const std::string& s, int (*pred)(int)) {
  if (s.empty()) return false;
  for (unsigned char c : s)
    if (c >= 0x80 || !pred(c)) return false;
  return true;
}

std::string py_title(const std::string& s) {
  std::string out = s;
  bool prev_cased = false;
  for (char& c : out) {
    bool alpha = std::isalpha(uint8_t(c)) != 0;
    if (alpha) c = prev_cased ? char(std::tolower(uint8_t(c))) : char(std::toupper(uint8_t(c)));
    prev_cased = alpha;
  }
  return out;
}

bool matches_affix(const std::string& s, const Value& arg, bool prefix) {
  auto one = [&](const Value& v) {
    if (!v.is_string()) fail("{}() argument must be str or a tuple of str", prefix ? "startswith" : "endswith");
    const std::string& a = v.str();
    if (a.size() > s.size()) return false;
    return prefix ? s.compare(0, a.size(), a) == 0 : s.compare(s.size() - a.size(), a.size(), a) == 0;
  };
  if (arg.is_list()) {
    for (const Value& v : arg.list())
      if (one(v)) return true;
    return false;
  }
  return one(arg);
}

Value string_method(const std::string& s, const std::string& name) {
  auto m = [&](std::function<Value(CallArgs&)> f) { return Value(fn("str." + name, std::move(f))); };
  if (name == "upper") return m([s](CallArgs&) { return Value(ascii_upper(s)); });
  if (name == "lower") return m([s](CallArgs&) { return Value(ascii_lower(s)); });
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    bool l = name != "rstrip", r = name != "lstrip";
    return m([s, l, r](CallArgs& a) { return Value(py_strip(s, a.get(0, "chars", Value(None{})), l, r)); });
  }
  if (name == "split" || name == "rsplit") {
    bool right = name == "rsplit";
    return m([s, right](CallArgs& a) {
      Value ms = a.get(1, "maxsplit", Value(int64_t(-1)));
      return Value(split(s, a.get(0, "sep", Value(None{})), ms.is_int() ? ms.as_int() : -1, right));
    });
  }
  if (name == "splitlines")
    return m([s](CallArgs& a) { return Value(splitlines(s, truthy(a.get(0, "keepends", Value(false))))); });
  if (name == "startswith" || name == "endswith") {
    bool prefix = name == "startswith";
    return m([s, prefix](CallArgs& a) { return Value(matches_affix(s, a.get(0, "prefix"), prefix)); });
  }
  if (name == "replace")
    return m([s](CallArgs& a) {
      CallArgs fa;
      fa.pos = a.pos;
      fa.kw = a.kw;
      return apply_filter("replace", Value(s), fa);
    });
  if (name == "title") return m([s](CallArgs&) { return Value(py_title(s)); });
  if (name == "capitalize")
    return m([s](CallArgs&) {
      std::string r = ascii_lower(s);
      if (!r.empty()) r[0] = char(std::toupper(uint8_t(r[0])));
      return Value(r);
    });
  if (name == "find" || name == "rfind" || name == "index" || name == "count") {
    return m([s, name](CallArgs& a) {
      const std::string& sub = arg_str(a, 0, "sub");
      if (name == "count") {
        if (sub.empty()) return Value(int64_t(unicode::utf8_length(s) + 1));
        int64_t n = 0;
        for (size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + sub.size())) ++n;
        return Value(n);
      }
      size_t at = name == "rfind" ? s.rfind(sub) : s.find(sub);
      if (at == std::string::npos) {
        if (name == "index") fail("substring not found");
        return Value(int64_t(-1));
      }
      return Value(int64_t(unicode::utf8_length(s.substr(0, at))));
    });
  }
  if (name == "join")
    return m([s](CallArgs& a) {
      std::string r;
      bool first = true;
      for (const Value& v : iterate(a.get(0, "iterable"))) {
        if (!v.is_string()) fail("sequence item: expected str instance, {} found", v.type_name());
        if (!first) r += s;
        r += v.str();
        first = false;
      }
      return Value(r);
    });
  if (name == "removeprefix" || name == "removesuffix") {
    bool pre = name == "removeprefix";
    return m([s, pre](CallArgs& a) {
      const std::string& x = arg_str(a, 0, pre ? "prefix" : "suffix");
      if (x.size() <= s.size() && (pre ? s.compare(0, x.size(), x) == 0 : s.compare(s.size() - x.size(), x.size(), x) == 0))
        return Value(pre ? s.substr(x.size()) : s.substr(0, s.size() - x.size()));
      return Value(s);
    });
  }
  static const std::pair<const char*, int (*)(int)> kPreds[] = {
      {"isdigit", ::isdigit}, {"isalpha", ::isalpha}, {"isalnum", ::isalnum},
      {"isspace", ::isspace}, {"islower", ::islower}, {"isupper", ::isupper}};
  for (const auto& [pname, pred] : kPreds)
    if (name == pname) {
      auto p = pred;
      return m([s, p](CallArgs&) { return Value(all_chars(s, p)); });
    }
  return Value::undefined(fmt::format("'str object' has no attribute '{}'", name));
}

bool is_unsafe(const std::string& type, const std::string& name) {
  static const char* const kDict[] = {"update", "pop", "popitem", "setdefault", "clear"};
  static const char* const kList[] = {"append", "extend", "insert", "pop", "remove", "clear", "sort", "reverse"};
  if (type == "dict") return std::find(std::begin(kDict), std::end(kDict), name) != std::end(kDict);
  return std::find(std::begin(kList), std::end(kList), name) != std::end(kList);
}

}  // namespace

std::string ascii_lower(std::string s) {
  for (char& c : s) c = char(std::tolower(uint8_t(c)));
  return s;
}

std::string ascii_upper(std::string s) {
  for (char& c : s) c = char(std::toupper(uint8_t(c)));
  return s;
}

Value get_method(const Value& obj, const std::string& name) {
  if (obj.is_string()) return string_method(obj.str(), name);
  if (obj.is_dict()) {
    auto d = std::get<std::shared_ptr<Dict>>(obj.v);
    if (name == "get")
      return Value(fn("dict.get", [d](CallArgs& a) {
        Value key = a.get(0, "key");
        const Value* v = key.is_string() ? d->find(key.str()) : nullptr;
        return v ? *v : a.get(1, "default", Value(None{}));
      }));
    if (name == "items")
      return Value(fn("dict.items", [d](CallArgs&) {
        List l;
        for (const auto& [k, v] : d->items) l.emplace_back(List({Value(k), v}, true));
        return Value(std::move(l));
      }));
    if (name == "keys")
      return Value(fn("dict.keys", [d](CallArgs&) {
        List l;
        for (const auto& [k, v] : d->items) l.emplace_back(k);
        return Value(std::move(l));
      }));
    if (name == "values")
      return Value(fn("dict.values", [d](CallArgs&) {
        List l;
        for (const auto& [k, v] : d->items) l.push_back(v);
        return Value(std::move(l));
      }));
    if (name == "copy") return Value(fn("dict.copy", [d](CallArgs&) { return Value(Dict(*d)); }));
    if (is_unsafe("dict", name))
      return Value(fn("dict." + name, [name](CallArgs&) -> Value {
        fail("access to attribute '{}' of 'dict' object is unsafe (the template sandbox is immutable)", name);
      }));
  }
  if (obj.is_list()) {
    auto l = std::get<std::shared_ptr<List>>(obj.v);
    if (name == "index" || name == "count")
      return Value(fn("list." + name, [l, name](CallArgs& a) {
        Value x = a.get(0, "value");
        int64_t n = 0;
        for (size_t i = 0; i < l->size(); ++i)
          if (equals((*l)[i], x)) {
            if (name == "index") return Value(int64_t(i));
            ++n;
          }
        if (name == "index") fail("value is not in list");
        return Value(n);
      }));
    if (name == "copy") return Value(fn("list.copy", [l](CallArgs&) { return Value(List(*l)); }));
    if (is_unsafe("list", name))
      return Value(fn("list." + name, [name](CallArgs&) -> Value {
        fail("access to attribute '{}' of 'list' object is unsafe (the template sandbox is immutable)", name);
      }));
  }
  return Value::undefined(fmt::format("'{} object' has no attribute '{}'", obj.type_name(), name));
}

Value get_attr(const Value& obj, const std::string& name) {
  if (obj.is_undefined()) fail("{}", std::get<Undefined>(obj.v).name);
  if (obj.is_namespace()) {
    const Value* v = obj.ns().find(name);
    return v ? *v : Value::undefined(fmt::format("'Namespace' has no attribute '{}'", name));
  }
  Value m = get_method(obj, name);
  if (!m.is_undefined()) return m;
  if (obj.is_dict()) {
    const Value* v = obj.dict().find(name);
    if (v) return *v;
    return Value::undefined(fmt::format("'dict object' has no attribute '{}'", name));
  }
  return m;
}

Value get_item(const Value& obj, const Value& key) {
  if (obj.is_undefined()) fail("{}", std::get<Undefined>(obj.v).name);
  if (obj.is_dict()) {
    if (key.is_string()) {
      if (const Value* v = obj.dict().find(key.str())) return *v;
      Value m = get_method(obj, key.str());
      if (!m.is_undefined()) return m;
    }
    return Value::undefined(fmt::format("'dict object' has no attribute {}", repr(key)));
  }
  if (obj.is_namespace() && key.is_string()) return get_attr(obj, key.str());
  if ((obj.is_list() || obj.is_string()) && (key.is_int() || key.is_bool())) {
    int64_t i = key.as_int_or_bool();
    if (obj.is_list()) {
      const List& l = obj.list();
      int64_t n = int64_t(l.size());
      if (i < 0) i += n;
      if (i < 0 || i >= n) return Value::undefined(fmt::format("list object has no element {}", key.as_number()));
      return l[size_t(i)];
    }
    std::vector<std::string> chars = utf8_chars(obj.str());
    int64_t n = int64_t(chars.size());
    if (i < 0) i += n;
    if (i < 0 || i >= n) return Value::undefined("string index out of range");
    return Value(chars[size_t(i)]);
  }
  if (key.is_string()) return get_attr(obj, key.str());
  return Value::undefined(fmt::format("'{} object' has no item {}", obj.type_name(), repr(key)));
}

Dict make_globals() {
  Dict g;
  g.set("range", Value(fn("range", [](CallArgs& a) {
          int64_t start = 0, stop, step = 1;
          auto num = [](const Value& v) {
            if (!v.is_int()) fail("range() arguments must be integers");
            return v.as_int();
          };
          if (a.pos.size() == 1) {
            stop = num(a.pos[0]);
          } else if (a.pos.size() >= 2) {
            start = num(a.pos[0]), stop = num(a.pos[1]);
            if (a.pos.size() > 2) step = num(a.pos[2]);
          } else {
            fail("range expected at least 1 argument");
          }
          if (step == 0) fail("range() arg 3 must not be zero");
          List l;
          for (int64_t i = start; step > 0 ? i < stop : i > stop;) {
            l.emplace_back(i);
            if (l.size() > 10000000) fail("range too large");
            if (__builtin_add_overflow(i, step, &i)) break;  // past the int64 range: past stop too
          }
          return Value(std::move(l));
        })));
  g.set("namespace", Value(fn("namespace", [](CallArgs& a) {
          auto attrs = std::make_shared<Dict>();
          for (const Value& p : a.pos) {
            if (!p.is_dict()) fail("namespace() positional arguments must be dicts");
            for (const auto& [k, v] : p.dict().items) attrs->set(k, v);
          }
          for (const auto& [k, v] : a.kw) attrs->set(k, v);
          return Value(Namespace{attrs});
        })));
  g.set("dict", Value(fn("dict", [](CallArgs& a) {
          Dict d;
          for (const Value& p : a.pos) {
            if (!p.is_dict()) fail("dict() positional arguments must be dicts");
            for (const auto& [k, v] : p.dict().items) d.set(k, v);
          }
          for (const auto& [k, v] : a.kw) d.set(k, v);
          return Value(std::move(d));
        })));
  g.set("raise_exception", Value(fn("raise_exception", [](CallArgs& a) -> Value {
          fail("raise_exception: {}", to_str(a.get(0, "message")));
        })));
  g.set("strftime_now", Value(fn("strftime_now", [](CallArgs& a) {
          std::time_t now = std::time(nullptr);
          std::tm tm{};
          localtime_r(&now, &tm);
          char buf[256];
          size_t n = std::strftime(buf, sizeof buf, arg_str(a, 0, "format").c_str(), &tm);
          return Value(std::string(buf, n));
        })));
  return g;
}

}  // namespace ds::jinja
