#include "core/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include "core/error.h"

namespace ds {

void init_logging(const std::string& level) {
  auto logger = spdlog::stderr_color_mt("deltaserve");
  spdlog::set_default_logger(logger);
  auto lvl = spdlog::level::from_str(level);
  if (lvl == spdlog::level::off && level != "off") fail("unknown log level '{}'", level);
  spdlog::set_level(lvl);
  spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ %v");
}

}  // namespace ds
