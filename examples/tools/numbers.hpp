#pragma once
// The one strict number parser of the kvtrim tools. A value is taken whole or rejected: no
// leading or trailing characters ("0.5x", " 3", "7 "), no overflow (strtoll's ERANGE is an
// error, not LLONG_MAX), no non-finite reals ("inf", "nan", "1e999"), and integers are
// range-checked before they are narrowed, so "--layers 4294967326" is an error, never 30.
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <optional>
#include <string>

namespace kvtools {

// The largest token count a tool takes (--budget, --window, --prompt-len, ...): above any
// context, and small enough that budget x layers x heads stays far from int64 overflow.
constexpr long long k_max_tokens = std::numeric_limits<int>::max();

// A base-10 integer with an optional sign that fits long long, or nothing.
inline std::optional<long long> parse_strict_integer(const std::string& s) {
  if (s.empty()) return std::nullopt;
  const char c0 = s[0];
  if (!(c0 == '-' || c0 == '+' || (c0 >= '0' && c0 <= '9'))) return std::nullopt;  // no spaces
  errno = 0;
  char* end = nullptr;
  const long long x = std::strtoll(s.c_str(), &end, 10);
  if (errno == ERANGE || end == s.c_str() || *end != '\0') return std::nullopt;
  return x;
}

// A finite real number written whole (strtod syntax, "C" locale digits), or nothing.
inline std::optional<double> parse_strict_number(const std::string& s) {
  if (s.empty()) return std::nullopt;
  const char c0 = s[0];
  if (!(c0 == '-' || c0 == '+' || c0 == '.' || (c0 >= '0' && c0 <= '9'))) return std::nullopt;
  errno = 0;
  char* end = nullptr;
  const double d = std::strtod(s.c_str(), &end);
  if (end == s.c_str() || *end != '\0' || !std::isfinite(d)) return std::nullopt;
  if (errno == ERANGE && std::fabs(d) > 1.0) return std::nullopt;  // overflow (underflow to ~0 is fine)
  return d;
}

}  // namespace kvtools
