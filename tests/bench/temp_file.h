// Test files under the build folder, for the bench tests that read workloads from disk.
#pragma once
#include <fstream>
#include <string>

namespace ds::bench::testing {

// Writes `text` to DS_BINARY_DIR/name and returns the path.
inline std::string write_temp(const std::string& name, const std::string& text) {
  const std::string path = std::string(DS_BINARY_DIR) + "/" + name;
  std::ofstream(path) << text;
  return path;
}

}  // namespace ds::bench::testing
