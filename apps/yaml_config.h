// `deltaserve serve --config FILE.yaml`, as vLLM's: the file maps flag names (without the dashes;
// '_' and '-' alike) to values, and flags on the command line win over the file. (CLI11's own config
// support does not run for subcommands, so the file's flags are turned into arguments instead.)
//
// The file is read by a small parser of the YAML subset such files use, not by a YAML library:
// the GPU machines have no yaml-cpp, and a serve config is a flat mapping. Accepted:
//   key: value            scalars (plain, 'single' or "double" quoted; true/false for flags)
//   key: [a, b, "c d"]    flow lists (for --served-model-name and the like)
//   key:                  block lists, one "- item" per line
//     - a
//   # comments, blank lines, a leading "---"
// Anything else (nested mappings, anchors, tags, multi-line strings, several documents) is an
// error naming the line, never silently misread.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

namespace ds::cli {

// Parses the subset above; throws CLI::ConfigError naming the line on anything outside it.
std::vector<CLI::ConfigItem> parse_yaml_subset(std::istream& input);

// Adds `--config FILE` to `cmd` (the value is read by expand_config_file before parsing).
void add_config_option(CLI::App& cmd);

// Rewrites a subcommand's arguments (`args`, without the subcommand's name) so that the flags of
// `--config FILE` come after them as ordinary arguments, for the options the command line does not
// set: every check of the command line applies to the file's values alike, and the command line
// wins. `add_options` registers the subcommand's options (to learn their names and which ones the
// command line sets). Throws CLI::ConfigError for a key that names no option.
std::vector<std::string> expand_config_file(const std::vector<std::string>& args,
                                            const std::function<void(CLI::App&)>& add_options);

}  // namespace ds::cli
