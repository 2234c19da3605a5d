// Filters, tests, methods and globals of the chat-template language: jinja2's builtins that chat
// templates use, Hugging Face's overrides (`tojson` with ensure_ascii=False and no HTML escaping,
// `raise_exception`, `strftime_now`) and the Python str/dict/list methods the immutable sandbox
// allows. They throw ds::Error (without a line); the interpreter adds the line.
#pragma once
#include <string>

#include "tokenizer/jinja/value.h"

namespace ds::jinja {

bool has_filter(const std::string& name);
Value apply_filter(const std::string& name, const Value& v, const CallArgs& args);

bool has_test(const std::string& name);
bool apply_test(const std::string& name, const Value& v, const CallArgs& args);

// `obj.name` as a bound method (str, dict and list methods); Undefined when there is none.
Value get_method(const Value& obj, const std::string& name);

// range, namespace, dict, raise_exception, strftime_now.
Dict make_globals();

// Attribute access as jinja2 does it: methods first, then items; Undefined (carrying the
// message to raise if it is used further) when missing.
Value get_attr(const Value& obj, const std::string& name);
// Subscript access: items first, then attributes.
Value get_item(const Value& obj, const Value& key);

// Python str methods shared with filters.
std::string ascii_lower(std::string s);
std::string ascii_upper(std::string s);

}  // namespace ds::jinja
