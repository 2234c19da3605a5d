// Errors are exceptions of one type carrying a message; library code never exits.
#pragma once
#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace ds {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace ds

// DS_CHECK(cond, "fmt {}", x): throw ds::Error with the message when cond is false.
#define DS_CHECK(cond, ...)                 \
  do {                                      \
    if (!(cond)) ::ds::fail(__VA_ARGS__);   \
  } while (0)
