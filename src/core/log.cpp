#include "core/log.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>

#include <chrono>
#include <ctime>

#include "core/error.h"

namespace ds {

namespace {

constexpr const char* kTextPattern = "%Y-%m-%d %H:%M:%S.%e %^%l%$ %v";

void append_json_string(std::string* out, std::string_view s) {
  *out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': *out += "\\\""; break;
      case '\\': *out += "\\\\"; break;
      case '\n': *out += "\\n"; break;
      case '\r': *out += "\\r"; break;
      case '\t': *out += "\\t"; break;
      default:
        if (c < 0x20) {
          *out += fmt::format("\\u{:04x}", c);
        } else {
          *out += char(c);
        }
    }
  }
  *out += '"';
}

class JsonFormatter : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    std::string line = json_log_line(msg);
    line += '\n';
    dest.append(line.data(), line.data() + line.size());
  }
  std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<JsonFormatter>(); }
};

}  // namespace

std::string json_log_line(const spdlog::details::log_msg& msg) {
  using namespace std::chrono;
  const auto t = msg.time;
  const std::time_t secs = system_clock::to_time_t(t);
  const auto ms = duration_cast<milliseconds>(t.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::string out = "{\"time\":";
  append_json_string(&out, fmt::format("{}.{:03d}Z", buf, int(ms)));
  out += ",\"level\":";
  const auto lv = spdlog::level::to_string_view(msg.level);
  append_json_string(&out, std::string_view(lv.data(), lv.size()));
  out += ",\"logger\":";
  append_json_string(&out, std::string_view(msg.logger_name.data(), msg.logger_name.size()));
  out += ",\"message\":";
  append_json_string(&out, std::string_view(msg.payload.data(), msg.payload.size()));
  out += '}';
  return out;
}

void init_logging(const std::string& level) {
  auto logger = spdlog::stderr_color_mt("deltaserve");
  spdlog::set_default_logger(logger);
  auto lvl = spdlog::level::from_str(level);
  if (lvl == spdlog::level::off && level != "off") fail("unknown log level '{}'", level);
  spdlog::set_level(lvl);
  spdlog::set_pattern(kTextPattern);
}

void set_log_format(const std::string& format) {
  if (format == "text") {
    spdlog::set_pattern(kTextPattern);
  } else if (format == "json") {
    spdlog::set_formatter(std::make_unique<JsonFormatter>());
  } else {
    fail("unknown log format '{}' (text or json)", format);
  }
}

}  // namespace ds
