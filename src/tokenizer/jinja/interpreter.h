// Tree-walking renderer for a parsed chat template. Scoping follows jinja2: `for` bodies and macro
// calls get their own frame (so `set` inside a loop does not leak; use a namespace), `if` does
// not. Macros see the frame they were defined in. Errors are TemplateError naming the line.
#pragma once
#include <memory>
#include <string>

#include "tokenizer/jinja/ast.h"

namespace ds::jinja {

class Program {
 public:
  explicit Program(const std::string& source);  // lex + parse; throws TemplateError
  // Renders with `context` (a dict: its keys become template variables). Throws TemplateError.
  std::string render(const Value& context) const;
  // The same, with the byte ranges of the output that came from data strings (see DataSpans).
  Rendered render_marked(const Value& context) const;

 private:
  Body body_;
};

}  // namespace ds::jinja
