#include "tokenizer/jinja/interpreter.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <optional>

#include "tokenizer/jinja/builtins.h"

namespace ds::jinja {
namespace {

constexpr int kMaxCallDepth = 200;
constexpr uint64_t kMaxRepeatItems = uint64_t(1) << 24;  // `s * n` / `list * n`: result bytes or items

struct Frame {
  std::shared_ptr<Frame> parent;
  Dict vars;
};
using FramePtr = std::shared_ptr<Frame>;

enum class Flow { Normal, Break, Continue };

class Interpreter {
 public:
  Rendered run(const Body& body, const Value& context) {
    auto globals = std::make_shared<Frame>();
    globals->vars = make_globals();
    auto top = std::make_shared<Frame>();
    top->parent = globals;
    if (context.is_dict()) top->vars = context.dict();
    // A macro holds its defining frame, which (through its vars or its parents' vars) may hold
    // the macro: break those cycles when rendering ends, however it ends.
    struct Cleanup {
      std::vector<FramePtr>& frames;
      ~Cleanup() {
        for (const FramePtr& f : frames)
          for (Frame* p = f.get(); p; p = p->parent.get()) p->vars.items.clear();
      }
    } cleanup{macro_frames_};
    RenderBudget budget(render_budget());
    Rendered out;
    exec(body, top, out);
    return out;
  }

 private:
  static const Value* lookup(const FramePtr& f, const std::string& name) {
    for (const Frame* p = f.get(); p; p = p->parent.get())
      if (const Value* v = p->vars.find(name)) return v;
    return nullptr;
  }

  Flow exec(const Body& body, const FramePtr& frame, Rendered& out) {
    for (const NodePtr& n : body) {
      Flow f = exec(*n, frame, out);
      if (f != Flow::Normal) return f;
    }
    return Flow::Normal;
  }

  Flow exec(const Node& n, const FramePtr& frame, Rendered& out) {
    charge_at(n.line, 1);
    switch (n.kind) {
      case Node::Text: out.append_markup(n.text); return Flow::Normal;
      case Node::Output: out.append(eval(*n.expr, frame)); return Flow::Normal;
      case Node::If:
        for (const auto& [cond, body] : n.branches)
          if (truthy(eval(*cond, frame))) return exec(body, frame, out);
        return exec(n.else_body, frame, out);
      case Node::For: return exec_for(n, frame, out);
      case Node::Set: {
        Value v = eval(*n.expr, frame);
        if (!n.attr.empty()) {
          const Value* ns = lookup(frame, n.text);
          if (!ns || !ns->is_namespace())
            throw TemplateError(n.line, fmt::format("cannot assign attribute on non-namespace object '{}'", n.text));
          try {
            check_storable(v, &ns->ns());
          } catch (const Error& e) {
            throw TemplateError(n.line, fmt::format("'{}.{}': {}", n.text, n.attr, e.what()));
          }
          ns->ns().set(n.attr, std::move(v));
        } else if (!n.targets.empty()) {
          unpack(n.targets, v, *frame, n.line);
        } else {
          frame->vars.set(n.text, std::move(v));
        }
        return Flow::Normal;
      }
      case Node::SetBlock: {
        Rendered body;
        exec(n.body, frame, body);
        Value v = with_spans(std::move(body));
        if (n.expr) {
          auto tmp = std::make_shared<Frame>();
          tmp->parent = frame;
          tmp->vars.set("\x01body", v);
          v = eval(*n.expr, tmp);
        }
        frame->vars.set(n.text, std::move(v));
        return Flow::Normal;
      }
      case Node::Macro: frame->vars.set(n.text, make_macro(n, frame)); return Flow::Normal;
      case Node::Break: return Flow::Break;
      case Node::Continue: return Flow::Continue;
      case Node::Scope: return exec(n.body, frame, out);
    }
    return Flow::Normal;
  }

  static void unpack(const std::vector<std::string>& names, const Value& v, Frame& f, int line) {
    if (names.size() == 1) {
      f.vars.set(names[0], v);
      return;
    }
    std::vector<Value> items;
    try {
      items = iterate(v);
    } catch (const Error& e) {
      throw TemplateError(line, e.what());
    }
    if (items.size() != names.size())
      throw TemplateError(line, fmt::format("cannot unpack {} values into {} names", items.size(), names.size()));
    for (size_t i = 0; i < names.size(); ++i) f.vars.set(names[i], items[i]);
  }

  Flow exec_for(const Node& n, const FramePtr& frame, Rendered& out) {
    Value seq = eval(*n.expr, frame);
    std::vector<Value> items;
    try {
      if (seq.is_none()) fail("'NoneType' object is not iterable");
      items = iterate(seq);
    } catch (const TemplateError&) {
      throw;
    } catch (const Error& e) {
      throw TemplateError(n.line, e.what());
    }
    if (n.cond) {  // `for x in xs if cond`: filter first; loop.* counts the kept items
      std::vector<Value> kept;
      for (Value& it : items) {
        auto f = std::make_shared<Frame>();
        f->parent = frame;
        unpack(n.targets, it, *f, n.line);
        if (truthy(eval(*n.cond, f))) kept.push_back(std::move(it));
      }
      items = std::move(kept);
    }
    if (items.empty()) return exec(n.else_body, frame, out);
    const int64_t len = int64_t(items.size());
    for (int64_t i = 0; i < len; ++i) {
      charge_at(n.line, 16);  // the turn's frame and loop variables
      auto f = std::make_shared<Frame>();
      f->parent = frame;
      Dict loop;
      loop.set("index", Value(i + 1));
      loop.set("index0", Value(i));
      loop.set("revindex", Value(len - i));
      loop.set("revindex0", Value(len - i - 1));
      loop.set("first", Value(i == 0));
      loop.set("last", Value(i == len - 1));
      loop.set("length", Value(len));
      loop.set("depth", Value(int64_t(1)));
      loop.set("depth0", Value(int64_t(0)));
      loop.set("previtem", i > 0 ? items[size_t(i - 1)] : Value::undefined("there is no previous item"));
      loop.set("nextitem", i + 1 < len ? items[size_t(i + 1)] : Value::undefined("there is no next item"));
      loop.set("cycle", Value(std::make_shared<const Function>(Function{"loop.cycle", [i](CallArgs& a) {
                           if (a.pos.empty()) fail("no items for cycling given");
                           return a.pos[size_t(i) % a.pos.size()];
                         }})));
      f->vars.set("loop", Value(std::move(loop)));
      unpack(n.targets, items[size_t(i)], *f, n.line);
      if (exec(n.body, f, out) == Flow::Break) break;
    }
    return Flow::Normal;
  }

  Value make_macro(const Node& n, const FramePtr& defined_in) {
    const Node* node = &n;
    macro_frames_.push_back(defined_in);
    return Value(std::make_shared<const Function>(Function{n.text, [this, node, defined_in](CallArgs& a) {
      if (++depth_ > kMaxCallDepth) {
        --depth_;
        fail("maximum macro recursion depth exceeded");
      }
      auto f = std::make_shared<Frame>();
      f->parent = defined_in;
      const auto& params = node->targets;
      List varargs;
      varargs.tuple = true;
      for (size_t i = 0; i < a.pos.size(); ++i) {
        if (i < params.size()) f->vars.set(params[i], a.pos[i]);
        else varargs.push_back(a.pos[i]);
      }
      Dict kwargs;
      for (const auto& [k, v] : a.kw) {
        auto it = std::find(params.begin(), params.end(), k);
        if (it == params.end()) kwargs.set(k, v);
        else f->vars.set(k, v);
      }
      for (size_t i = 0; i < params.size(); ++i) {
        if (f->vars.find(params[i])) continue;
        f->vars.set(params[i], node->defaults[i] ? eval(*node->defaults[i], f)
                                                 : Value::undefined(fmt::format("'{}' is undefined", params[i])));
      }
      f->vars.set("varargs", Value(std::move(varargs)));
      f->vars.set("kwargs", Value(std::move(kwargs)));
      Rendered out;
      try {
        exec(node->body, f, out);
      } catch (...) {
        --depth_;
        throw;
      }
      --depth_;
      return with_spans(std::move(out));
    }, /*macro=*/true}));
  }

  static bool args_hold_data(const CallArgs& a) {
    for (const Value& v : a.pos)
      if (holds_data(v)) return true;
    for (const auto& [k, v] : a.kw)
      if (holds_data(v)) return true;
    return false;
  }

  // For a filter whose result is its input string or that string trimmed, moves the input's spans
  // onto the result (sets r.data; true). Anything else marks the whole result as data.
  static bool filter_keeping_spans(const Value& in, Value& r) {
    if (!in.is_string() || !r.is_string() || !in.data) return false;
    const std::string& s = in.str();
    const size_t off = r.str().empty() ? 0 : s.find(r.str());
    if (off == std::string::npos) return false;
    // Only a whitespace prefix/suffix may have been removed (trim), else the spans could not move.
    auto blank = [](const std::string& x, size_t b, size_t e) {
      for (size_t i = b; i < e; ++i)
        if (!std::isspace(static_cast<unsigned char>(x[i]))) return false;
      return true;
    };
    const size_t end = off + r.str().size();
    if (!blank(s, 0, off) || !blank(s, end, s.size())) return false;
    DataSpans spans;
    for (const auto& [b, e] : *in.data) {
      size_t nb = std::max(b, off), ne = std::min(e, end);
      if (nb < ne) spans.emplace_back(nb - off, ne - off);
    }
    r.data = spans.empty() ? nullptr : std::make_shared<const DataSpans>(std::move(spans));
    return true;
  }

  CallArgs eval_args(const Expr& e, const FramePtr& frame) {
    CallArgs a;
    for (const ExprPtr& x : e.args) a.pos.push_back(eval(*x, frame));
    for (const auto& [k, x] : e.kwargs) a.kw.emplace_back(k, eval(*x, frame));
    return a;
  }

  // A charge that fails names the template line.
  static void charge_at(int line, uint64_t units) {
    try {
      charge(units);
    } catch (const Error& err) {
      throw TemplateError(line, err.what());
    }
  }

  // Each expression is charged for the size of what it yields (string bytes, list or dict items):
  // every operation's operands are such results, so work proportional to them is paid for.
  Value eval(const Expr& e, const FramePtr& frame) {
    try {
      Value r = eval_inner(e, frame);
      charge(1 + (r.is_string() ? r.str().size() : r.is_list() ? r.list().size() : r.is_dict() ? r.dict().items.size() : 0));
      return r;
    } catch (const TemplateError&) {
      throw;
    } catch (const Error& err) {
      throw TemplateError(e.line, err.what());
    }
  }

  Value eval_inner(const Expr& e, const FramePtr& frame) {
    switch (e.kind) {
      case Expr::Literal: return e.value;
      case Expr::Name: {
        const Value* v = lookup(frame, e.name);
        return v ? *v : Value::undefined(fmt::format("'{}' is undefined", e.name));
      }
      case Expr::List:
      case Expr::Tuple: {
        List l;
        l.tuple = e.kind == Expr::Tuple;
        for (const ExprPtr& k : e.kids) l.push_back(eval(*k, frame));
        return Value(std::move(l));
      }
      case Expr::DictLit: {
        Dict d;
        for (size_t i = 0; i + 1 < e.kids.size(); i += 2) {
          Value k = eval(*e.kids[i], frame);
          if (!k.is_string()) fail("dict keys must be strings here, not {}", k.type_name());
          d.data_keys = d.data_keys || holds_data(k);
          d.set(k.str(), eval(*e.kids[i + 1], frame));
        }
        return Value(std::move(d));
      }
      case Expr::Attr: return get_attr(eval(*e.kids[0], frame), e.name);
      case Expr::Item: {
        Value obj = eval(*e.kids[0], frame);
        Value r = get_item(obj, eval(*e.kids[1], frame));
        return obj.is_string() && holds_data(obj) ? mark_data(r) : r;  // a character of data is data
      }
      case Expr::Slice: return slice(e, frame);
      case Expr::Call: {
        // A method call (obj.method(...)) is evaluated here so that obj's data can mark the result.
        bool data_in = false;
        Value callee;
        if (e.kids[0]->kind == Expr::Attr) {
          Value obj = eval(*e.kids[0]->kids[0], frame);
          data_in = holds_data(obj);
          callee = get_attr(obj, e.kids[0]->name);
        } else {
          callee = eval(*e.kids[0], frame);
        }
        if (callee.is_undefined()) fail("{}", std::get<Undefined>(callee.v).name);
        if (!callee.is_function()) fail("'{}' object is not callable", callee.type_name());
        CallArgs a = eval_args(e, frame);
        if (callee.function().macro) return callee.function().fn(a);  // spans tracked by its rendering
        data_in = data_in || args_hold_data(a);
        Value r = callee.function().fn(a);
        return data_in ? mark_data(r) : r;
      }
      case Expr::Filter: {
        if (!has_filter(e.name)) fail("no filter named '{}'", e.name);
        Value v = eval(*e.kids[0], frame);
        CallArgs a = eval_args(e, frame);
        Value r = apply_filter(e.name, v, a);
        if (!holds_data(v) && !args_hold_data(a)) return r;
        return filter_keeping_spans(v, r) ? r : mark_data(r);
      }
      case Expr::Test: {
        if (!has_test(e.name)) fail("no test named '{}'", e.name);
        Value v = eval(*e.kids[0], frame);
        bool r = apply_test(e.name, v, eval_args(e, frame));
        return Value(e.negated ? !r : r);
      }
      case Expr::Not: return Value(!truthy(eval(*e.kids[0], frame)));
      case Expr::Neg:
      case Expr::Pos: {
        Value v = eval(*e.kids[0], frame);
        if (v.is_int() && e.kind == Expr::Neg && v.as_int() == INT64_MIN) fail("integer overflow in -{}", v.as_int());
        if (v.is_int()) return Value(e.kind == Expr::Neg ? -v.as_int() : v.as_int());
        if (!v.is_number() && !v.is_bool()) fail("bad operand type for unary -: '{}'", v.type_name());
        return Value(e.kind == Expr::Neg ? -v.as_number() : v.as_number());
      }
      case Expr::And: {
        Value l = eval(*e.kids[0], frame);
        return truthy(l) ? eval(*e.kids[1], frame) : l;
      }
      case Expr::Or: {
        Value l = eval(*e.kids[0], frame);
        return truthy(l) ? l : eval(*e.kids[1], frame);
      }
      case Expr::Binary: return binary(e.name, eval(*e.kids[0], frame), eval(*e.kids[1], frame));
      case Expr::Compare: {
        Value left = eval(*e.kids[0], frame);
        for (size_t i = 0; i < e.ops.size(); ++i) {
          Value right = eval(*e.kids[i + 1], frame);
          if (!compare_op(e.ops[i], left, right)) return Value(false);
          left = std::move(right);
        }
        return Value(true);
      }
      case Expr::Cond:
        if (truthy(eval(*e.kids[0], frame))) return eval(*e.kids[1], frame);
        return e.kids[2] ? eval(*e.kids[2], frame) : Value::undefined("the conditional had no else");
    }
    return Value();
  }

  static bool compare_op(const std::string& op, const Value& a, const Value& b) {
    if (op == "==") return equals(a, b);
    if (op == "!=") return !equals(a, b);
    if (op == "in" || op == "notin") {
      bool in;
      if (b.is_string()) {
        if (!a.is_string()) fail("'in <string>' requires string as left operand, not {}", a.type_name());
        in = b.str().find(a.str()) != std::string::npos;
      } else if (b.is_dict()) {
        in = a.is_string() && b.dict().find(a.str()) != nullptr;
      } else if (b.is_list() || b.is_undefined()) {
        in = false;
        for (const Value& x : iterate(b))
          if (equals(x, a)) in = true;
      } else {
        fail("argument of type '{}' is not iterable", b.type_name());
      }
      return op == "in" ? in : !in;
    }
    int c = compare(a, b);
    if (op == "<") return c < 0;
    if (op == "<=") return c <= 0;
    if (op == ">") return c > 0;
    return c >= 0;
  }

  static Value binary(const std::string& op, const Value& a, const Value& b) {
    if (op == "~") return concat(a, b);
    const bool ints = (a.is_int() || a.is_bool()) && (b.is_int() || b.is_bool());
    const bool nums = (a.is_number() || a.is_bool()) && (b.is_number() || b.is_bool());
    if (op == "+") {
      if (a.is_string() && b.is_string()) return concat(a, b);
      if (a.is_list() && b.is_list()) {
        List l = a.list();
        l.insert(l.end(), b.list().begin(), b.list().end());
        return Value(std::move(l));
      }
    }
    if (op == "*" && ((a.is_string() || a.is_list()) && b.is_int())) {
      const size_t unit = a.is_string() ? a.str().size() : a.list().size();
      if (b.as_int() > 0 && unit > 0 && uint64_t(b.as_int()) > kMaxRepeatItems / unit)
        fail("repetition result too large ({} x {})", unit, b.as_int());
      if (a.is_string()) {
        std::string r;
        for (int64_t i = 0; i < b.as_int(); ++i) r += a.str();
        return holds_data(a) ? data_string(std::move(r)) : Value(std::move(r));
      }
      List l;
      for (int64_t i = 0; i < b.as_int(); ++i) l.insert(l.end(), a.list().begin(), a.list().end());
      return Value(std::move(l));
    }
    if (!nums) fail("unsupported operand type(s) for {}: '{}' and '{}'", op, a.type_name(), b.type_name());
    if (ints && op != "/" && op != "**") {
      int64_t x = a.as_int_or_bool(), y = b.as_int_or_bool(), r = 0;
      bool overflow = false;
      if (op == "+") overflow = __builtin_add_overflow(x, y, &r);
      if (op == "-") overflow = __builtin_sub_overflow(x, y, &r);
      if (op == "*") overflow = __builtin_mul_overflow(x, y, &r);
      if (overflow) fail("integer overflow in {} {} {}", x, op, y);
      if (op == "+" || op == "-" || op == "*") return Value(r);
      if (y == 0) fail("integer division or modulo by zero");
      if (x == INT64_MIN && y == -1) fail("integer overflow in {} {} {}", x, op, y);
      int64_t q = x / y, m = x % y;
      if (m != 0 && ((m < 0) != (y < 0))) --q, m += y;  // Python floors
      return Value(op == "//" ? q : m);
    }
    double x = a.as_number(), y = b.as_number();
    if (op == "+") return Value(x + y);
    if (op == "-") return Value(x - y);
    if (op == "*") return Value(x * y);
    if (op == "**") {
      int64_t r = 0;
      if (ints && y >= 0) {
        if (!float_to_int(std::round(std::pow(x, y)), r)) fail("integer overflow in {} ** {}", x, y);
        return Value(r);
      }
      return Value(std::pow(x, y));
    }
    if (y == 0) fail("division by zero");
    if (op == "/") return Value(x / y);
    double q = std::floor(x / y);
    return op == "//" ? Value(q) : Value(x - q * y);
  }

  Value slice(const Expr& e, const FramePtr& frame) {
    Value obj = eval(*e.kids[0], frame);
    auto idx = [&](int k) -> std::optional<int64_t> {
      if (!e.kids[size_t(k)]) return std::nullopt;
      Value v = eval(*e.kids[size_t(k)], frame);
      if (v.is_none()) return std::nullopt;
      if (!v.is_int()) fail("slice indices must be integers");
      return v.as_int();
    };
    auto start = idx(1), stop = idx(2), step_opt = idx(3);
    int64_t step = step_opt.value_or(1);
    if (step == 0) fail("slice step cannot be zero");
    std::vector<Value> items;
    std::vector<std::string> chars;
    int64_t n;
    if (obj.is_string()) {
      chars = utf8_chars(obj.str());
      n = int64_t(chars.size());
    } else if (obj.is_list()) {
      n = int64_t(obj.list().size());
    } else {
      fail("'{}' object is not subscriptable", obj.type_name());
    }
    auto clamp = [&](std::optional<int64_t> v, int64_t def) {
      if (!v) return def;
      int64_t x = *v < 0 ? *v + n : *v;
      if (step > 0) return std::clamp<int64_t>(x, 0, n);
      return std::clamp<int64_t>(x, -1, n - 1);
    };
    int64_t b = clamp(start, step > 0 ? 0 : n - 1), en = clamp(stop, step > 0 ? n : -1);
    std::string s;
    List l;
    for (int64_t i = b; step > 0 ? i < en : i > en; i += step) {
      if (obj.is_string()) s += chars[size_t(i)];
      else l.push_back(obj.list()[size_t(i)]);
    }
    if (obj.is_string()) return holds_data(obj) ? data_string(std::move(s)) : Value(std::move(s));
    return Value(std::move(l));
  }

  int depth_ = 0;
  std::vector<FramePtr> macro_frames_;  // frames that macros were defined in
};

}  // namespace

Program::Program(const std::string& source) : body_(parse(lex(source))) {}

std::string Program::render(const Value& context) const { return Interpreter().run(body_, context).text; }

Rendered Program::render_marked(const Value& context) const { return Interpreter().run(body_, context); }

}  // namespace ds::jinja
