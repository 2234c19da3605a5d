// Recursive-descent parser for the Jinja2 subset, following jinja2's grammar and precedence:
// cond-expr < or < and < not < compare < + - < ~ < * / // % < ** < unary < postfix/filter/test.
#include <set>

#include "tokenizer/jinja/ast.h"

namespace ds::jinja {
namespace {

class Parser {
 public:
  explicit Parser(const std::vector<Token>& t) : t_(t) {}

  Body parse_template() {
    Body body = parse_body({});
    if (cur().kind != Token::Eof) error("unexpected tag");
    return body;
  }

 private:
  // Nesting of blocks and expressions (parentheses, lists, `not`, unary signs): deeper templates are
  // refused, so that neither parsing nor rendering recurses without bound.
  static constexpr int kMaxNesting = 500;
  struct Nest {
    Parser& p;
    explicit Nest(Parser& parser) : p(parser) {
      if (++p.nesting_ > kMaxNesting) {
        --p.nesting_;
        p.error(fmt::format("template nested more than {} levels deep", kMaxNesting));
      }
    }
    ~Nest() { --p.nesting_; }
  };

  const Token& cur() const { return t_[i_]; }
  const Token& peek(size_t k = 1) const { return t_[std::min(i_ + k, t_.size() - 1)]; }
  void next() {
    if (i_ + 1 < t_.size()) ++i_;
  }
  [[noreturn]] void error(const std::string& msg) const { throw TemplateError(cur().line, msg); }
  bool is_op(const char* op) const { return cur().kind == Token::Op && cur().text == op; }
  bool is_name(const char* name) const { return cur().kind == Token::Name && cur().text == name; }
  bool skip_op(const char* op) {
    if (!is_op(op)) return false;
    next();
    return true;
  }
  bool skip_name(const char* name) {
    if (!is_name(name)) return false;
    next();
    return true;
  }
  void expect_op(const char* op) {
    if (!skip_op(op)) error(fmt::format("expected '{}'{}", op, describe()));
  }
  std::string expect_name() {
    if (cur().kind != Token::Name) error("expected a name" + describe());
    std::string n = cur().text;
    next();
    return n;
  }
  void expect_block_end() {
    if (cur().kind != Token::BlockEnd) error("expected end of statement block" + describe());
    next();
  }
  std::string describe() const {
    switch (cur().kind) {
      case Token::Eof: return ", got end of template";
      case Token::BlockEnd: return ", got '%}'";
      case Token::VarEnd: return ", got '}}'";
      default: return cur().text.empty() ? "" : ", got '" + cur().text + "'";
    }
  }

  // Parses nodes until a block tag whose keyword is in `ends` (left unconsumed, after '{%').
  Body parse_body(const std::set<std::string>& ends) {
    Nest nest(*this);
    Body body;
    for (;;) {
      const Token& tok = cur();
      if (tok.kind == Token::Eof) {
        // The closing tag sorts last in each set ({elif, else, endif}, {else, endfor}, ...).
        if (!ends.empty()) error(fmt::format("unexpected end of template: missing '{}'", *ends.rbegin()));
        return body;
      }
      if (tok.kind == Token::Data) {
        auto n = std::make_unique<Node>();
        n->kind = Node::Text;
        n->line = tok.line;
        n->text = tok.text;
        body.push_back(std::move(n));
        next();
      } else if (tok.kind == Token::VarBegin) {
        next();
        auto n = std::make_unique<Node>();
        n->kind = Node::Output;
        n->line = tok.line;
        n->expr = parse_tuple();
        if (cur().kind != Token::VarEnd) error("expected '}}'" + describe());
        next();
        body.push_back(std::move(n));
      } else if (tok.kind == Token::BlockBegin) {
        const Token& kw = peek();
        if (kw.kind == Token::Name && ends.count(kw.text)) {
          next();  // stop at the keyword
          return body;
        }
        next();
        body.push_back(parse_statement());
      } else {
        error("unexpected token");
      }
    }
  }

  NodePtr parse_statement() {
    const int line = cur().line;
    if (cur().kind != Token::Name) error("expected a statement keyword" + describe());
    const std::string kw = cur().text;
    next();
    auto n = std::make_unique<Node>();
    n->line = line;
    if (kw == "if") {
      n->kind = Node::If;
      ExprPtr cond = parse_tuple(false);
      expect_block_end();
      for (;;) {
        Body b = parse_body({"elif", "else", "endif"});
        n->branches.emplace_back(std::move(cond), std::move(b));
        std::string k = expect_name();
        if (k == "elif") {
          cond = parse_tuple(false);
          expect_block_end();
        } else if (k == "else") {
          expect_block_end();
          n->else_body = parse_body({"endif"});
          next();
          expect_block_end();
          break;
        } else {
          expect_block_end();
          break;
        }
      }
    } else if (kw == "for") {
      n->kind = Node::For;
      n->targets = parse_targets();
      if (!skip_name("in")) error("expected 'in'" + describe());
      n->expr = parse_tuple(false, true);
      if (skip_name("if")) n->cond = parse_expression();
      if (skip_name("recursive")) error("recursive loops are not supported");
      expect_block_end();
      n->body = parse_body({"else", "endfor"});
      if (expect_name() == "else") {
        expect_block_end();
        n->else_body = parse_body({"endfor"});
        next();
      }
      expect_block_end();
    } else if (kw == "set") {
      std::string target = expect_name();
      if (skip_op(".")) {
        n->text = target;
        n->attr = expect_name();
      } else if (is_op(",")) {
        n->targets.push_back(target);
        while (skip_op(",")) n->targets.push_back(expect_name());
      } else {
        n->text = target;
      }
      if (skip_op("=")) {
        n->kind = Node::Set;
        n->expr = parse_tuple();
        expect_block_end();
      } else {
        if (!n->attr.empty() || !n->targets.empty()) error("a block set needs a single name");
        n->kind = Node::SetBlock;
        if (is_op("|")) {  // {% set x | filter %}: filters apply to the rendered body
          auto self = std::make_unique<Expr>();
          self->kind = Expr::Name;
          self->line = line;
          self->name = "\x01body";
          n->expr = parse_filter_expr(std::move(self));
        }
        expect_block_end();
        n->body = parse_body({"endset"});
        next();
        expect_block_end();
      }
    } else if (kw == "macro") {
      n->kind = Node::Macro;
      n->text = expect_name();
      expect_op("(");
      while (!is_op(")")) {
        if (!n->targets.empty()) expect_op(",");
        if (is_op(")")) break;
        n->targets.push_back(expect_name());
        n->defaults.push_back(skip_op("=") ? parse_expression() : nullptr);
      }
      expect_op(")");
      expect_block_end();
      n->body = parse_body({"endmacro"});
      next();
      if (cur().kind == Token::Name) next();  // optional macro name after endmacro
      expect_block_end();
    } else if (kw == "break" || kw == "continue") {
      n->kind = kw == "break" ? Node::Break : Node::Continue;
      expect_block_end();
    } else if (kw == "generation") {  // Hugging Face's assistant-mask marker: renders its body
      n->kind = Node::Scope;
      expect_block_end();
      n->body = parse_body({"endgeneration"});
      next();
      expect_block_end();
    } else {
      throw TemplateError(line, fmt::format("unknown or unsupported tag '{}'", kw));
    }
    return n;
  }

  std::vector<std::string> parse_targets() {
    std::vector<std::string> names;
    bool paren = skip_op("(");
    names.push_back(expect_name());
    while (skip_op(",")) {
      if (paren && is_op(")")) break;
      names.push_back(expect_name());
    }
    if (paren) expect_op(")");
    return names;
  }

  ExprPtr make(Expr::Kind k, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = k;
    e->line = line;
    return e;
  }

  // expr[, expr ...] → a tuple when there is a comma.
  ExprPtr parse_tuple(bool with_condexpr = true, bool stop_at_if = false) {
    const int line = cur().line;
    ExprPtr first = with_condexpr ? parse_expression() : parse_or();
    if (!is_op(",")) return first;
    auto t = make(Expr::Tuple, line);
    t->kids.push_back(std::move(first));
    while (skip_op(",")) {
      if (cur().kind == Token::VarEnd || cur().kind == Token::BlockEnd || is_op(")") ||
          (stop_at_if && is_name("if")))
        break;
      t->kids.push_back(with_condexpr ? parse_expression() : parse_or());
    }
    return t;
  }

  ExprPtr parse_expression() {
    ExprPtr e = parse_or();
    while (is_name("if")) {
      const int line = cur().line;
      next();
      auto c = make(Expr::Cond, line);
      ExprPtr cond = parse_or();
      ExprPtr other = skip_name("else") ? parse_expression() : nullptr;
      c->kids.push_back(std::move(cond));
      c->kids.push_back(std::move(e));
      c->kids.push_back(std::move(other));
      e = std::move(c);
    }
    return e;
  }

  ExprPtr binary(Expr::Kind k, const char* op, ExprPtr l, ExprPtr r, int line) {
    auto b = make(k, line);
    b->name = op;
    b->kids.push_back(std::move(l));
    b->kids.push_back(std::move(r));
    return b;
  }

  ExprPtr parse_or() {
    Nest nest(*this);
    ExprPtr e = parse_and();
    while (is_name("or")) {
      int line = cur().line;
      next();
      e = binary(Expr::Or, "or", std::move(e), parse_and(), line);
    }
    return e;
  }
  ExprPtr parse_and() {
    ExprPtr e = parse_not();
    while (is_name("and")) {
      int line = cur().line;
      next();
      e = binary(Expr::And, "and", std::move(e), parse_not(), line);
    }
    return e;
  }
  ExprPtr parse_not() {
    if (is_name("not")) {
      Nest nest(*this);
      auto n = make(Expr::Not, cur().line);
      next();
      n->kids.push_back(parse_not());
      return n;
    }
    return parse_compare();
  }
  ExprPtr parse_compare() {
    const int line = cur().line;
    ExprPtr first = parse_math1();
    ExprPtr cmp;
    for (;;) {
      std::string op;
      if (cur().kind == Token::Op && (cur().text == "==" || cur().text == "!=" || cur().text == "<" ||
                                      cur().text == "<=" || cur().text == ">" || cur().text == ">=")) {
        op = cur().text;
        next();
      } else if (is_name("in")) {
        op = "in";
        next();
      } else if (is_name("not") && peek().kind == Token::Name && peek().text == "in") {
        op = "notin";
        next();
        next();
      } else {
        break;
      }
      if (!cmp) {
        cmp = make(Expr::Compare, line);
        cmp->kids.push_back(std::move(first));
      }
      cmp->ops.push_back(op);
      cmp->kids.push_back(parse_math1());
    }
    return cmp ? std::move(cmp) : std::move(first);
  }
  ExprPtr parse_math1() {
    ExprPtr e = parse_concat();
    while (is_op("+") || is_op("-")) {
      std::string op = cur().text;
      int line = cur().line;
      next();
      e = binary(Expr::Binary, op == "+" ? "+" : "-", std::move(e), parse_concat(), line);
    }
    return e;
  }
  ExprPtr parse_concat() {
    ExprPtr e = parse_math2();
    while (is_op("~")) {
      int line = cur().line;
      next();
      e = binary(Expr::Binary, "~", std::move(e), parse_math2(), line);
    }
    return e;
  }
  ExprPtr parse_math2() {
    ExprPtr e = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      static const char* const kOps[] = {"*", "/", "//", "%"};
      const char* op = nullptr;
      for (const char* o : kOps)
        if (cur().text == o) op = o;
      int line = cur().line;
      next();
      e = binary(Expr::Binary, op, std::move(e), parse_pow(), line);
    }
    return e;
  }
  ExprPtr parse_pow() {
    ExprPtr e = parse_unary();
    while (is_op("**")) {
      int line = cur().line;
      next();
      e = binary(Expr::Binary, "**", std::move(e), parse_unary(), line);
    }
    return e;
  }
  ExprPtr parse_unary(bool with_filter = true) {
    Nest nest(*this);
    ExprPtr e;
    if (is_op("-") || is_op("+")) {
      auto u = make(is_op("-") ? Expr::Neg : Expr::Pos, cur().line);
      next();
      u->kids.push_back(parse_unary(false));
      e = std::move(u);
    } else {
      e = parse_primary();
    }
    e = parse_postfix(std::move(e));
    if (with_filter) e = parse_filter_expr(std::move(e));
    return e;
  }

  ExprPtr parse_primary() {
    const Token& tok = cur();
    const int line = tok.line;
    if (tok.kind == Token::Name) {
      auto lit = make(Expr::Literal, line);
      if (tok.text == "true" || tok.text == "True") lit->value = Value(true);
      else if (tok.text == "false" || tok.text == "False") lit->value = Value(false);
      else if (tok.text == "none" || tok.text == "None") lit->value = Value(None{});
      else {
        auto n = make(Expr::Name, line);
        n->name = tok.text;
        next();
        return n;
      }
      next();
      return lit;
    }
    if (tok.kind == Token::String) {
      std::string s = tok.text;
      next();
      while (cur().kind == Token::String) {  // adjacent literals concatenate
        s += cur().text;
        next();
      }
      auto lit = make(Expr::Literal, line);
      lit->value = Value(std::move(s));
      return lit;
    }
    if (tok.kind == Token::Int || tok.kind == Token::Float) {
      auto lit = make(Expr::Literal, line);
      int64_t i = 0;
      if (tok.kind == Token::Int && !parse_int(tok.text, i)) error("integer literal '" + tok.text + "' is out of range");
      try {
        lit->value = tok.kind == Token::Int ? Value(i) : Value(std::stod(tok.text));
      } catch (const std::exception&) {
        error("bad number literal '" + tok.text + "'");
      }
      next();
      return lit;
    }
    if (is_op("(")) {
      next();
      if (skip_op(")")) return make(Expr::Tuple, line);
      ExprPtr e = parse_tuple();
      expect_op(")");
      return e;
    }
    if (is_op("[")) {
      next();
      auto l = make(Expr::List, line);
      while (!is_op("]")) {
        if (!l->kids.empty()) expect_op(",");
        if (is_op("]")) break;
        l->kids.push_back(parse_expression());
      }
      expect_op("]");
      return l;
    }
    if (is_op("{")) {
      next();
      auto d = make(Expr::DictLit, line);
      while (!is_op("}")) {
        if (!d->kids.empty()) expect_op(",");
        if (is_op("}")) break;
        d->kids.push_back(parse_expression());
        expect_op(":");
        d->kids.push_back(parse_expression());
      }
      expect_op("}");
      return d;
    }
    error("unexpected token" + describe());
  }

  ExprPtr parse_postfix(ExprPtr e) {
    for (;;) {
      const int line = cur().line;
      if (is_op(".")) {
        next();
        if (cur().kind == Token::Name) {
          auto a = make(Expr::Attr, line);
          a->name = cur().text;
          next();
          a->kids.push_back(std::move(e));
          e = std::move(a);
        } else if (cur().kind == Token::Int) {
          auto it = make(Expr::Item, line);
          auto idx = make(Expr::Literal, line);
          int64_t i = 0;
          if (!parse_int(cur().text, i)) error("index '" + cur().text + "' is out of range");
          idx->value = Value(i);
          next();
          it->kids.push_back(std::move(e));
          it->kids.push_back(std::move(idx));
          e = std::move(it);
        } else {
          error("expected an attribute name" + describe());
        }
      } else if (is_op("[")) {
        next();
        e = parse_subscript(std::move(e), line);
      } else if (is_op("(")) {
        e = parse_call(std::move(e));
      } else {
        return e;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr obj, int line) {
    ExprPtr parts[3];
    bool slice = false;
    int k = 0;
    for (;;) {
      if (is_op("]")) break;
      if (is_op(":")) {
        slice = true;
        next();
        if (++k > 2) error("too many ':' in subscript");
        continue;
      }
      if (parts[k]) error("expected ':' or ']'" + describe());
      parts[k] = parse_expression();
    }
    expect_op("]");
    if (!slice) {
      if (!parts[0]) error("empty subscript");
      auto it = make(Expr::Item, line);
      it->kids.push_back(std::move(obj));
      it->kids.push_back(std::move(parts[0]));
      return it;
    }
    auto s = make(Expr::Slice, line);
    s->kids.push_back(std::move(obj));
    for (auto& p : parts) s->kids.push_back(std::move(p));
    return s;
  }

  // Arguments after '(' (current token); fills e->args / e->kwargs.
  void parse_args(Expr& e) {
    expect_op("(");
    bool first = true;
    while (!is_op(")")) {
      if (!first) expect_op(",");
      first = false;
      if (is_op(")")) break;
      if (is_op("*") || is_op("**")) error("*args / **kwargs in calls are not supported");
      if (cur().kind == Token::Name && peek().kind == Token::Op && peek().text == "=") {
        std::string key = cur().text;
        next();
        next();
        e.kwargs.emplace_back(key, parse_expression());
      } else {
        if (!e.kwargs.empty()) error("positional argument follows keyword argument");
        e.args.push_back(parse_expression());
      }
    }
    expect_op(")");
  }

  ExprPtr parse_call(ExprPtr callee) {
    auto c = make(Expr::Call, cur().line);
    c->kids.push_back(std::move(callee));
    parse_args(*c);
    return c;
  }

  std::string dotted_name() {
    std::string n = expect_name();
    while (is_op(".") && peek().kind == Token::Name) {
      next();
      n += "." + cur().text;
      next();
    }
    return n;
  }

  ExprPtr parse_filter_expr(ExprPtr e) {
    for (;;) {
      const int line = cur().line;
      if (is_op("|")) {
        next();
        auto f = make(Expr::Filter, line);
        f->name = dotted_name();
        f->kids.push_back(std::move(e));
        if (is_op("(")) parse_args(*f);
        e = std::move(f);
      } else if (is_name("is")) {
        next();
        auto t = make(Expr::Test, line);
        t->negated = skip_name("not");
        t->name = dotted_name();
        t->kids.push_back(std::move(e));
        if (is_op("(")) {
          parse_args(*t);
        } else if ((cur().kind == Token::Name || cur().kind == Token::String || cur().kind == Token::Int ||
                    cur().kind == Token::Float || is_op("(") || is_op("[") || is_op("{")) &&
                   !is_name("else") && !is_name("or") && !is_name("and")) {
          if (is_name("is")) error("You cannot chain multiple tests with is");
          t->args.push_back(parse_postfix(parse_primary()));
        }
        e = std::move(t);
      } else if (is_op("(")) {
        e = parse_call(std::move(e));
      } else {
        return e;
      }
    }
  }

  const std::vector<Token>& t_;
  size_t i_ = 0;
  int nesting_ = 0;
};

}  // namespace

Body parse(const std::vector<Token>& tokens) { return Parser(tokens).parse_template(); }

}  // namespace ds::jinja
