#pragma once
// A method's own parameters: each registry entry declares its keys (type, default, valid range,
// one line of help); callers pass values as text (`"beta" -> "20"`), as a CLI or a binding has
// them, and every value is parsed and range-checked here, once, before a method is built.
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "kvtrim/core/error.hpp"

namespace kvtrim {

enum class param_kind { integer, real, boolean, choice };

inline const char* to_string(param_kind k) {
  switch (k) {
    case param_kind::integer: return "integer";
    case param_kind::real: return "real";
    case param_kind::boolean: return "boolean";
    default: return "choice";
  }
}

struct param_spec {
  std::string key;
  param_kind kind = param_kind::real;
  std::string default_value;          // as text, in the form parse() accepts
  double min = -std::numeric_limits<double>::infinity();  // integer / real: inclusive range
  double max = std::numeric_limits<double>::infinity();
  std::vector<std::string> choices;   // choice: the accepted words
  std::string help;
  bool odd = false;                   // integer: must be odd (pooling kernels)
};

// key -> value as text.
using param_values = std::map<std::string, std::string>;

namespace detail {

// Strict numbers: the whole text, finite, no overflow.
inline double parse_real(const std::string& who, const std::string& v) {
  char* end = nullptr;
  errno = 0;
  const double d = v.empty() ? 0.0 : std::strtod(v.c_str(), &end);
  require(!v.empty() && *end == '\0' && errno != ERANGE && std::isfinite(d), who, ": '", v,
          "' is not a finite number");
  return d;
}

inline std::int64_t parse_integer(const std::string& who, const std::string& v) {
  char* end = nullptr;
  errno = 0;
  const long long x = v.empty() ? 0 : std::strtoll(v.c_str(), &end, 10);
  require(!v.empty() && *end == '\0' && errno != ERANGE, who, ": '", v,
          "' is not an integer in range");
  return static_cast<std::int64_t>(x);
}

// Checks `v` against `p`; returns it in canonical text (as written, for numbers).
inline void check_param(const std::string& method, const param_spec& p, const std::string& v) {
  const std::string who = method + ":" + p.key;
  if (p.kind == param_kind::choice) {
    for (const auto& c : p.choices)
      if (c == v) return;
    std::string all;
    for (const auto& c : p.choices) all += (all.empty() ? "" : ", ") + c;
    fail(who, ": '", v, "' is not one of ", all);
  }
  if (p.kind == param_kind::boolean) {
    require(v == "true" || v == "false", who, ": '", v, "' is not true or false");
    return;
  }
  const double d = p.kind == param_kind::integer ? static_cast<double>(parse_integer(who, v))
                                                 : parse_real(who, v);
  require(d >= p.min && d <= p.max, who, " = ", v, " outside [", p.min, ", ", p.max, "]");
  require(!p.odd || static_cast<std::int64_t>(d) % 2 != 0, who, " = ", v, " must be odd");
}

}  // namespace detail

// The values a method is built with: its declared defaults, overridden by the caller's values.
class param_set {
 public:
  param_set() = default;
  // Rejects keys the method does not declare and values outside their spec.
  param_set(const std::string& method, const std::vector<param_spec>& specs,
            const param_values& given)
      : method_(method) {
    for (const auto& p : specs) values_[p.key] = p.default_value;
    for (const auto& [k, v] : given) {
      const param_spec* spec = nullptr;
      for (const auto& p : specs)
        if (p.key == k) spec = &p;
      if (spec == nullptr) {
        std::string all;
        for (const auto& p : specs) all += (all.empty() ? "" : ", ") + p.key;
        detail::fail("method '", method, "' has no parameter '", k, "' (its parameters: ",
                     all.empty() ? "none" : all, ")");
      }
      detail::check_param(method, *spec, v);
      values_[k] = v;
    }
  }

  const param_values& values() const { return values_; }
  const std::string& text(const std::string& key) const {
    auto it = values_.find(key);
    detail::require(it != values_.end(), "method '", method_, "' has no parameter '", key, "'");
    return it->second;
  }
  double real(const std::string& key) const { return detail::parse_real(key, text(key)); }
  std::int64_t integer(const std::string& key) const {
    return detail::parse_integer(key, text(key));
  }
  bool boolean(const std::string& key) const { return text(key) == "true"; }

 private:
  std::string method_;
  param_values values_;
};

}  // namespace kvtrim
