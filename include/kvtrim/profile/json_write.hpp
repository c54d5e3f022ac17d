#pragma once
// The JSON writer of profiles: compact or pretty, keys sorted, numbers with 17 significant digits
// (%.17g) so every double reads back bit for bit, whatever the process locale.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <locale>
#include <sstream>
#include <string>

#include "kvtrim/profile/json_value.hpp"

namespace kvtrim::json {
namespace detail {

inline void append_double(std::string& out, double d) {
  char buf[40];
#if defined(__cpp_lib_to_chars) && __cpp_lib_to_chars >= 201611L
  auto r = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::general, 17);  // == %.17g
  out.append(buf, r.ptr);
#else
  std::ostringstream os;
  os.imbue(std::locale::classic());
  os.precision(17);
  os << d;  // %.17g
  out += os.str();
  (void)buf;
#endif
}

inline void dump_string(std::string& out, const std::string& s) {
  out += '"';
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      const std::size_t len =
          utf8::sequence_length(reinterpret_cast<const unsigned char*>(s.data()) + i, s.size() - i);
      if (len == 0) kvtrim::detail::fail("json: string is not valid UTF-8 (byte ", int(c), " at ", i, ")");
      out.append(s, i, len);
      i += len;
      continue;
    }
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04X", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
    ++i;
  }
  out += '"';
}

inline bool is_scalar(const value& v) { return !v.is_array() && !v.is_object(); }

inline void dump_value(std::string& out, const value& v, int indent, int level) {
  auto newline = [&](int lvl) {
    if (indent < 0) return;
    out += '\n';
    out.append(static_cast<std::size_t>(indent * lvl), ' ');
  };
  switch (v.kind()) {
    case type::null: out += "null"; return;
    case type::boolean: out += v.as_bool() ? "true" : "false"; return;
    case type::number:
      if (!std::isfinite(v.as_number()))
        kvtrim::detail::fail("json: cannot write the non-finite number ", v.as_number());
      append_double(out, v.as_number());
      return;
    case type::string: dump_string(out, v.as_string()); return;
    case type::array: {
      const array_t& a = v.as_array();
      // Arrays of scalars stay on one line: a profile's score rows read as rows.
      const bool flat = indent < 0 || std::all_of(a.begin(), a.end(), is_scalar);
      out += '[';
      for (std::size_t i = 0; i < a.size(); ++i) {
        if (i) out += indent >= 0 && flat ? ", " : ",";
        if (!flat) newline(level + 1);
        dump_value(out, a[i], indent, level + 1);
      }
      if (!flat && !a.empty()) newline(level);
      out += ']';
      return;
    }
    case type::object: {
      const object_t& o = v.as_object();
      out += '{';
      for (std::size_t i = 0; i < o.size(); ++i) {
        if (i) out += ',';
        newline(level + 1);
        dump_string(out, o[i].first);
        out += indent >= 0 ? ": " : ":";
        dump_value(out, o[i].second, indent, level + 1);
      }
      if (!o.empty()) newline(level);
      out += '}';
      return;
    }
  }
}

}  // namespace detail

// Writes `v` as JSON: compact when indent < 0, else pretty with `indent` spaces per level (arrays
// of scalars on one line). Keys come out sorted; numbers as %.17g; non-finite numbers and strings
// that are not valid UTF-8 are rejected.
inline std::string dump(const value& v, int indent = -1) {
  std::string out;
  detail::dump_value(out, v, indent, 0);
  return out;
}

}  // namespace kvtrim::json
