// Validators for numeric command-line flags: the value must parse as the option's type (no
// wrap-around: "2^50" into an int is refused) and lie in [lo, hi]; floating values must also be
// finite. CLI11 prefixes the message with the flag's name ("--max-queue: ...").
#pragma once
#include <CLI/CLI.hpp>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <regex>
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

// vLLM's human-readable integers (its --max-model-len): a decimal suffix k, m, g, t multiplies by 10^3, 10^6,
// 10^9, 10^12 and allows a fraction ("4k" = 4,000, "25.6k" = 25,600, "1m" = 1,000,000); a binary suffix
// K, M, G, T multiplies by 2^10, 2^20, 2^30, 2^40 and takes whole numbers only ("4K" = 4,096, "1M" =
// 1,048,576); "-1" and "auto" (any case) become `auto_value`. A CLI11 transform: it rewrites the value to
// the plain integer; anything else is left as it is for the option's own checks.
inline CLI::Validator human_readable_int(const std::string& auto_value) {
  return CLI::Validator(
      [auto_value](std::string& input) -> std::string {
        std::string v = input;
        const size_t b = v.find_first_not_of(" \t"), e = v.find_last_not_of(" \t");
        v = b == std::string::npos ? std::string() : v.substr(b, e - b + 1);
        std::string lower = v;
        for (char& c : lower) c = char(std::tolower((unsigned char)c));
        if (v == "-1" || lower == "auto") {
          input = auto_value;
          return {};
        }
        static const std::regex re(R"(^(\d+(?:\.\d+)?)([kKmMgGtT])$)");
        std::smatch m;
        if (!std::regex_match(v, m, re)) return {};
        const std::string number = m[1], suffix = m[2];
        const int power = int(std::string("kmgt").find(char(std::tolower((unsigned char)suffix[0])))) + 1;
        if (std::islower((unsigned char)suffix[0])) {
          const double x = std::strtod(number.c_str(), nullptr) * std::pow(1000.0, power);
          if (!(x < 9.2e18)) return "'" + input + "' is too large";
          input = std::to_string(int64_t(x));  // truncated, as vLLM's int(float(number) * multiplier)
          return {};
        }
        if (number.find('.') != std::string::npos)
          return "decimals are not allowed with the binary suffix " + suffix + " ('" + input + "'); did you mean " +
                 number + char(std::tolower((unsigned char)suffix[0])) + " (powers of 1000)?";
        const double x = std::strtod(number.c_str(), nullptr) * std::pow(1024.0, power);
        if (!(x < 9.2e18)) return "'" + input + "' is too large";
        input = std::to_string(std::stoll(number) * (int64_t(1) << (10 * power)));
        return {};
      },
      "N, Nk/Nm (x1000), NK/NM (x1024), -1/auto");
}

}  // namespace ds::cli
