// --log-format json (issue 16): one JSON object per record, every byte of the message escaped.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/log.h"

namespace ds {
namespace {

TEST(LogFormat, JsonLinesParseBackToTheRecord) {
  const std::string text = "quote \" backslash \\ newline \n tab \t ctrl \x01 utf8 \xc3\xa9";
  spdlog::details::log_msg msg(spdlog::source_loc{}, "deltaserve", spdlog::level::warn, text);
  msg.time = std::chrono::system_clock::time_point(std::chrono::milliseconds(1767225600123));  // 2026-01-01
  const std::string line = json_log_line(msg);
  EXPECT_EQ(line.find('\n'), std::string::npos);
  nlohmann::json j = nlohmann::json::parse(line);
  EXPECT_EQ(j["message"], text);
  EXPECT_EQ(j["level"], "warning");
  EXPECT_EQ(j["logger"], "deltaserve");
  EXPECT_EQ(j["time"], "2026-01-01T00:00:00.123Z");
}

TEST(LogFormat, UnknownFormatIsAnError) {
  EXPECT_THROW(set_log_format("xml"), Error);
  EXPECT_NO_THROW(set_log_format("text"));
}

}  // namespace
}  // namespace ds
