// Validators for numeric command-line flags: the value must parse as the option's type (no
// wrap-around: "2^50" into an int is refused) and lie in [lo, hi]; floating values must also be
// finite. CLI11 prefixes the message with the flag's name ("--max-queue: ...").
#pragma once
#include <CLI/CLI.hpp>
#include <cmath>
#include <string>
#include <type_traits>

namespace ds::cli {

template <typename T>
CLI::Validator in_range(T lo, T hi) {
  std::string desc = "in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  return CLI::Validator(
      [lo, hi](std::string& input) -> std::string {
        T v{};
        if (!CLI::detail::lexical_cast(input, v))
          return "'" + input + "' is not " + (std::is_integral_v<T> ? "an integer" : "a number") + " in the range " +
                 std::to_string(lo) + " to " + std::to_string(hi);
        if constexpr (std::is_floating_point_v<T>) {
          if (!std::isfinite(v)) return "'" + input + "' is not a finite number";
        }
        if (v < lo || v > hi)
          return "value " + input + " is outside the allowed range " + std::to_string(lo) + " to " + std::to_string(hi);
        return {};
      },
      desc);
}

// A string option that, when given, must not be empty ("--api-key ''" is a mistake, not "no key").
inline CLI::Validator non_empty() {
  return CLI::Validator(
      [](std::string& input) -> std::string { return input.empty() ? std::string("must not be empty") : std::string(); },
      "non-empty");
}

}  // namespace ds::cli
