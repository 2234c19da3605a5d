// Logging goes through spdlog; this header fixes the logger setup in one place.
#pragma once
#include <spdlog/spdlog.h>

#include <string>

namespace ds {
// level: trace|debug|info|warn|error|off. Logs go to stderr.
void init_logging(const std::string& level);
}  // namespace ds
