// Tokens and syntax tree of the chat-template language (a Jinja2 subset). Every node records the
// template line it comes from, so errors can name it.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "tokenizer/jinja/value.h"

namespace ds::jinja {

// An error at a template line (parse or render).
class TemplateError : public Error {
 public:
  TemplateError(int line, const std::string& msg)
      : Error(fmt::format("line {}: {}", line, msg)), line_(line), msg_(msg) {}
  int line() const { return line_; }
  const std::string& message() const { return msg_; }

 private:
  int line_;
  std::string msg_;
};

struct Token {
  enum Kind { Data, VarBegin, VarEnd, BlockBegin, BlockEnd, Name, String, Int, Float, Op, Eof };
  Kind kind;
  std::string text;  // Data text, name, decoded string, number text, operator
  int line;
};

// Splits template source into tokens, applying Hugging Face's settings (trim_blocks,
// lstrip_blocks, no trailing newline kept) and `-`/`+` whitespace control. Throws TemplateError.
std::vector<Token> lex(const std::string& source);

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum Kind {
    Literal, Name, List, Tuple, DictLit, Attr, Item, Slice, Call, Filter, Test,
    Not, Neg, Pos, Binary, And, Or, Compare, Cond
  };
  Kind kind;
  int line = 0;
  Value value;                                          // Literal
  std::string name;                                     // Name; Attr; Filter/Test name; Binary op
  std::vector<ExprPtr> kids;                            // operands (Slice: obj, start, stop, step)
  std::vector<ExprPtr> args;                            // Call/Filter/Test positional arguments
  std::vector<std::pair<std::string, ExprPtr>> kwargs;  // Call/Filter/Test keyword arguments
  std::vector<std::string> ops;                         // Compare operators (kids[i+1] follows ops[i])
  bool negated = false;                                 // Test: `is not`
};

struct Node;
using NodePtr = std::unique_ptr<Node>;
using Body = std::vector<NodePtr>;

struct Node {
  enum Kind { Text, Output, If, For, Set, SetBlock, Macro, Break, Continue, Scope };
  Kind kind;
  int line = 0;
  std::string text;                               // Text; Set/SetBlock/Macro name
  std::string attr;                               // Set on a namespace: `set ns.attr = ...`
  ExprPtr expr;                                   // Output; Set value; For iterable
  ExprPtr cond;                                   // For: `if` filter
  std::vector<std::string> targets;               // For loop variables; Set tuple targets; Macro params
  std::vector<ExprPtr> defaults;                  // Macro parameter defaults (null: none)
  std::vector<std::pair<ExprPtr, Body>> branches; // If/elif
  Body body, else_body;
};

// Parses tokens into a template body. Throws TemplateError naming the line.
Body parse(const std::vector<Token>& tokens);

}  // namespace ds::jinja
