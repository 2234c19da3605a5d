// Parsing `deltaserve serve` command lines in the apps tests (CLI11 alone, without main()'s expansions).
#pragma once
#include <string>
#include <vector>

#include "apps/serve_args.h"
#include "core/error.h"

namespace ds::cli::test {

// Parses `args` (without the program name) with `app`; "" on success, else the error message.
inline std::string parse_args(CLI::App& app, const std::vector<std::string>& args) {
  std::vector<std::string> rev(args.rbegin(), args.rend());  // CLI11 takes them reversed
  try {
    app.parse(rev);
    return "";
  } catch (const CLI::ParseError& e) {
    return std::string(e.what()).empty() ? "parse error" : e.what();
  }
}

// Parses `serve --model m <extra>` into *out; with `validate`, validate_serve_args too (its ds::Error is then
// the message). "" on success.
inline std::string parse_serve_line(const std::vector<std::string>& extra, ServeArgs* out, bool validate = false) {
  CLI::App app;
  add_serve_options(app, *out);
  std::vector<std::string> args = {"--model", "m"};
  args.insert(args.end(), extra.begin(), extra.end());
  std::string err = parse_args(app, args);
  if (!err.empty() || !validate) return err;
  try {
    validate_serve_args(*out);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace ds::cli::test
