// `deltaserve serve --config FILE.yaml`, as vLLM's: the file maps flag names (without the dashes;
// '_' and '-' alike) to values, and flags on the command line win over the file.
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
#include <string>
#include <vector>

namespace ds::cli {

class YamlSubsetConfig : public CLI::Config {
 public:
  std::string to_config(const CLI::App*, bool, bool, std::string) const override;
  std::vector<CLI::ConfigItem> from_config(std::istream& input) const override;
};

// Parses the subset above; throws CLI::ConfigError naming the line on anything outside it.
std::vector<CLI::ConfigItem> parse_yaml_subset(std::istream& input);

// Adds `--config FILE` to `cmd` with the YAML subset reader; unknown keys are errors.
void add_yaml_config_option(CLI::App& cmd);

}  // namespace ds::cli
