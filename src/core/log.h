// Logging goes through spdlog; this header fixes the logger setup in one place.
#pragma once
#include <spdlog/spdlog.h>

#include <string>

namespace ds {
// level: trace|debug|info|warn|error|off. Logs go to stderr.
void init_logging(const std::string& level);
// "text" (default: "2026-01-01 12:00:00.000 info message") or "json": one object per line,
// {"time": ISO 8601 UTC, "level", "logger", "message"}, for log collectors. Throws ds::Error on
// another value.
void set_log_format(const std::string& format);
// One log record as the JSON format writes it (without the newline); exposed for tests.
std::string json_log_line(const spdlog::details::log_msg& msg);
}  // namespace ds
