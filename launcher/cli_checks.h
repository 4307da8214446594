// The one range check for numeric command-line options: the text must be a whole number (for an
// integer option) or a finite number (never nan or inf) within [lo, hi] of the option's own type,
// so nothing is truncated or wrapped when CLI11 stores it. Every numeric option uses it.
#pragma once
#include <CLI/CLI.hpp>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <string>
#include <type_traits>

namespace lt::cli {

template <class T>
std::string range_text(T lo, T hi) {
  if constexpr (std::is_integral_v<T>) {
    return "[" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  } else {
    char b[64];
    std::snprintf(b, sizeof b, "[%g, %g]", (double)lo, (double)hi);
    return b;
  }
}

template <class T>
CLI::Validator in_range(T lo, T hi) {
  static_assert(std::is_arithmetic_v<T>);
  return CLI::Validator(
      [lo, hi](std::string& s) -> std::string {
        const std::string want = std::string(std::is_integral_v<T> ? "an integer" : "a finite number") + " in " +
                                 range_text(lo, hi) + ", got '" + s + "'";
        T v{};
        const char* end = s.data() + s.size();
        auto [p, ec] = std::from_chars(s.data(), end, v);
        if (ec != std::errc() || p != end) return "expected " + want;
        if constexpr (std::is_floating_point_v<T>)
          if (!std::isfinite(v)) return "expected " + want;
        if (v < lo || v > hi) return "expected " + want;
        return "";
      },
      range_text(lo, hi), "in_range");
}

}  // namespace lt::cli
