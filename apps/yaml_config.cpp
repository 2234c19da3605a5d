#include "apps/yaml_config.h"

#include <fmt/format.h>

#include <fstream>
#include <sstream>

namespace ds::cli {

namespace {

[[noreturn]] void bad(int line, const std::string& why) {
  throw CLI::ConfigError(fmt::format("--config: line {}: {}", line, why));
}

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r");
  return s.substr(b, e - b + 1);
}

// Cuts a " #" comment outside quotes.
std::string strip_comment(const std::string& s) {
  char quote = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (quote) {
      if (c == quote) quote = 0;
      else if (c == '\\' && quote == '"') ++i;
    } else if (c == '"' || c == '\'') {
      quote = c;
    } else if (c == '#' && (i == 0 || s[i - 1] == ' ' || s[i - 1] == '\t')) {
      return s.substr(0, i);
    }
  }
  return s;
}

// One scalar: quoted (with the quotes' escapes) or plain.
std::string scalar(const std::string& raw, int line) {
  std::string s = trim(raw);
  if (s.empty()) return s;
  const char q = s.front();
  if (q == '"' || q == '\'') {
    if (s.size() < 2 || s.back() != q) bad(line, "unterminated quoted string");
    std::string out;
    for (size_t i = 1; i + 1 < s.size(); ++i) {
      char c = s[i];
      if (q == '\'' && c == '\'' && s[i + 1] == '\'') {
        out += '\'';
        ++i;
      } else if (q == '"' && c == '\\') {
        char n = s[++i];
        out += n == 'n' ? '\n' : n == 't' ? '\t' : n;
      } else {
        out += c;
      }
    }
    return out;
  }
  static const std::string kReserved = "&*!|>%@`{";
  if (kReserved.find(q) != std::string::npos) bad(line, fmt::format("'{}' (YAML anchors, tags, block scalars, nested mappings) is not supported in a serve config", s));
  if (s == "~" || s == "null") return "";
  return s;
}

std::vector<std::string> flow_list(const std::string& s, int line) {
  if (s.back() != ']') bad(line, "a list must end with ']' on the same line");
  std::vector<std::string> out;
  std::string cur;
  char quote = 0;
  const std::string body = s.substr(1, s.size() - 2);
  for (char c : body) {
    if (quote) {
      if (c == quote) quote = 0;
      cur += c;
    } else if (c == '"' || c == '\'') {
      quote = c;
      cur += c;
    } else if (c == ',') {
      out.push_back(scalar(cur, line));
      cur.clear();
    } else if (c == '[' || c == '{') {
      bad(line, "nested lists and mappings are not supported");
    } else {
      cur += c;
    }
  }
  if (!trim(cur).empty() || !out.empty()) out.push_back(scalar(cur, line));
  return out;
}

}  // namespace

std::vector<CLI::ConfigItem> parse_yaml_subset(std::istream& input) {
  std::vector<CLI::ConfigItem> items;
  std::string raw;
  int line = 0;
  bool in_block_list = false, seen_marker = false;
  while (std::getline(input, raw)) {
    ++line;
    const size_t indent = raw.find_first_not_of(" \t");
    if (indent != std::string::npos && raw.substr(0, indent).find('\t') != std::string::npos)
      bad(line, "tabs are not allowed for indentation");
    std::string s = strip_comment(raw);
    if (trim(s).empty()) continue;
    if (items.empty() && !in_block_list && trim(s) == "---") {  // a leading document marker
      if (seen_marker) bad(line, "only one YAML document is allowed");
      seen_marker = true;
      continue;
    }
    if (trim(s) == "---" || trim(s) == "...") bad(line, "only one YAML document is allowed");
    const bool indented = s[0] == ' ';
    std::string t = trim(s);
    if (t[0] == '-' && (t.size() == 1 || t[1] == ' ')) {
      if (!in_block_list) bad(line, "a '- item' line must follow a 'key:' line with no value");
      items.back().inputs.push_back(scalar(t.substr(1), line));
      continue;
    }
    if (indented) bad(line, "nested mappings are not supported: keys are flag names at the top level");
    in_block_list = false;
    size_t colon = t.find(':');
    if (colon == std::string::npos || (colon + 1 < t.size() && t[colon + 1] != ' '))
      bad(line, fmt::format("expected 'flag-name: value', got '{}'", t));
    CLI::ConfigItem item;
    item.name = trim(t.substr(0, colon));
    if (item.name.empty() || item.name.find_first_of("\"'[]{} ") != std::string::npos)
      bad(line, fmt::format("'{}' is not a flag name", item.name));
    if (item.name.rfind("--", 0) == 0) item.name = item.name.substr(2);
    for (char& c : item.name)
      if (c == '_') c = '-';
    for (const auto& prev : items)
      if (prev.name == item.name) bad(line, fmt::format("'{}' is given twice", item.name));
    std::string value = trim(t.substr(colon + 1));
    if (value.empty()) {
      in_block_list = true;  // a block list follows (or an empty value)
    } else if (value[0] == '[') {
      item.inputs = flow_list(value, line);
    } else {
      item.inputs.push_back(scalar(value, line));
    }
    items.push_back(std::move(item));
  }
  for (const auto& it : items)
    if (it.inputs.empty()) throw CLI::ConfigError(fmt::format("--config: '{}' has no value", it.name));
  return items;
}

void add_config_option(CLI::App& cmd) {
  cmd.add_option("--config", "YAML file of flags (vLLM's format: 'max-model-len: 4096' per line); "
                             "command-line flags win")
      ->check(CLI::ExistingFile);
}

std::vector<std::string> expand_config_file(const std::vector<std::string>& args,
                                            const std::function<void(CLI::App&)>& add_options) {
  std::string file;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--config" && i + 1 < args.size()) file = args[i + 1];
    if (args[i].rfind("--config=", 0) == 0) file = args[i].substr(9);
  }
  if (file.empty()) return args;
  std::ifstream in(file);
  if (!in) return args;  // the parse reports the missing file, naming --config
  const std::vector<CLI::ConfigItem> items = parse_yaml_subset(in);

  // Which options does the command line set? A lenient parse of it alone (nothing required, extras allowed).
  CLI::App probe;
  add_options(probe);
  probe.allow_extras();
  for (CLI::Option* o : probe.get_options()) o->required(false);
  std::vector<std::string> rev(args.rbegin(), args.rend());
  try {
    probe.parse(rev);
  } catch (const CLI::ParseError&) {
    // the real parse reports it
  }
  std::vector<std::string> out = args;
  for (const CLI::ConfigItem& item : items) {
    CLI::Option* o = probe.get_option_no_throw("--" + item.name);
    if (o == nullptr && item.name.size() == 1) o = probe.get_option_no_throw("-" + item.name);
    if (o == nullptr) o = probe.get_option_no_throw(item.name);  // a positional (model)
    if (o == nullptr || item.name == "config")
      throw CLI::ConfigError(fmt::format("--config {}: '{}' is not a flag of this command", file, item.name));
    if (o->count() > 0) continue;  // the command line wins
    const std::string flag = o->get_lnames().empty() ? "-" + o->get_snames().front() : "--" + o->get_lnames().front();
    if (o->get_expected_min() == 0) {  // a flag: true/false
      const std::string& v = item.inputs.front();
      if (v == "true" || v == "True" || v == "yes" || v == "on" || v == "1") {
        out.push_back(flag);
      } else if (!(v == "false" || v == "False" || v == "no" || v == "off" || v == "0")) {
        throw CLI::ConfigError(fmt::format("--config {}: '{}' is a flag: true or false, not '{}'", file, item.name, v));
      }
      continue;
    }
    for (const std::string& v : item.inputs) out.push_back(flag + "=" + v);  // "=": a value may start with '-' 
  }
  return out;
}

}  // namespace ds::cli
