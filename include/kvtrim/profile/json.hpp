#pragma once
// A small, strict JSON reader/writer (RFC 8259) for profiles, imported artefacts and calibration
// resume files. kvtrim may depend only on the standard library, Eigen and OpenMP, so it carries
// its own. Strict on input (errors name line:column), exact on output: numbers are written with
// 17 significant digits (%.17g) so every double reads back bit for bit, and object keys are kept
// sorted so the same value always dumps to the same bytes.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <locale>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "kvtrim/core/error.hpp"

namespace kvtrim::json {

class value;
using array_t = std::vector<value>;
using member = std::pair<std::string, value>;
using object_t = std::vector<member>;  // sorted by key, keys unique

enum class type { null, boolean, number, string, array, object };

inline const char* type_name(type t) {
  switch (t) {
    case type::null: return "null";
    case type::boolean: return "boolean";
    case type::number: return "number";
    case type::string: return "string";
    case type::array: return "array";
    case type::object: return "object";
  }
  return "?";
}

// Default nesting limit: deep enough for any profile (depth 3), shallow enough that a hostile
// file cannot exhaust the stack of the recursive parser.
inline constexpr int default_max_depth = 256;

class value {
 public:
  value() = default;  // null
  value(std::nullptr_t) {}
  value(bool b) : type_(type::boolean), bool_(b) {}
  template <class N, std::enable_if_t<std::is_arithmetic_v<N> && !std::is_same_v<N, bool>, int> = 0>
  value(N n) : type_(type::number), number_(static_cast<double>(n)) {}
  value(const char* s) : type_(type::string), string_(s) {}
  value(std::string s) : type_(type::string), string_(std::move(s)) {}
  value(array_t a) : type_(type::array), array_(std::move(a)) {}
  // Members may come in any order; they are sorted. Duplicate keys are rejected.
  value(object_t o) : type_(type::object), object_(std::move(o)) {
    std::stable_sort(object_.begin(), object_.end(),
                     [](const member& a, const member& b) { return a.first < b.first; });
    for (std::size_t i = 1; i < object_.size(); ++i)
      kvtrim::detail::require(object_[i - 1].first != object_[i].first, "json: duplicate object key '",
                      object_[i].first, "'");
  }

  type kind() const { return type_; }
  bool is_null() const { return type_ == type::null; }
  bool is_bool() const { return type_ == type::boolean; }
  bool is_number() const { return type_ == type::number; }
  bool is_string() const { return type_ == type::string; }
  bool is_array() const { return type_ == type::array; }
  bool is_object() const { return type_ == type::object; }

  bool as_bool() const { return expect(type::boolean), bool_; }
  double as_number() const { return expect(type::number), number_; }
  const std::string& as_string() const { return expect(type::string), string_; }
  const array_t& as_array() const { return expect(type::array), array_; }
  array_t& as_array() { return expect(type::array), array_; }
  const object_t& as_object() const { return expect(type::object), object_; }

  // Object lookup (binary search); nullptr when absent.
  const value* find(std::string_view key) const {
    expect(type::object);
    auto it = lower(key);
    return it != object_.end() && it->first == key ? &it->second : nullptr;
  }
  const value& at(std::string_view key) const {
    const value* v = find(key);
    if (!v) kvtrim::detail::fail("json: missing key '", key, "'");
    return *v;
  }
  // Inserts or replaces a member; a null value becomes an empty object first.
  value& set(std::string key, value v) {
    if (type_ == type::null) type_ = type::object;
    expect(type::object);
    auto it = lower(key);
    if (it != object_.end() && it->first == key) return it->second = std::move(v);
    return object_.insert(it, member(std::move(key), std::move(v)))->second;
  }
  // Appends to an array; a null value becomes an empty array first.
  void push_back(value v) {
    if (type_ == type::null) type_ = type::array;
    expect(type::array);
    array_.push_back(std::move(v));
  }

  friend bool operator==(const value& a, const value& b) {
    if (a.type_ != b.type_) return false;
    switch (a.type_) {
      case type::null: return true;
      case type::boolean: return a.bool_ == b.bool_;
      case type::number: return a.number_ == b.number_;
      case type::string: return a.string_ == b.string_;
      case type::array: return a.array_ == b.array_;
      case type::object: return a.object_ == b.object_;
    }
    return false;
  }
  friend bool operator!=(const value& a, const value& b) { return !(a == b); }

 private:
  void expect(type t) const {
    if (type_ != t) kvtrim::detail::fail("json: expected ", type_name(t), ", got ", type_name(type_));
  }
  object_t::iterator lower(std::string_view key) {
    return std::lower_bound(object_.begin(), object_.end(), key,
                            [](const member& m, std::string_view k) { return m.first < k; });
  }
  object_t::const_iterator lower(std::string_view key) const {
    return std::lower_bound(object_.begin(), object_.end(), key,
                            [](const member& m, std::string_view k) { return m.first < k; });
  }

  type type_ = type::null;
  bool bool_ = false;
  double number_ = 0.0;
  std::string string_;
  array_t array_;
  object_t object_;
};

namespace detail {

// Locale-independent, correctly rounded conversions (what strtod/printf give in the "C" locale,
// without depending on the process locale).
inline bool parse_double(const char* first, const char* last, double& out) {
#if defined(__cpp_lib_to_chars) && __cpp_lib_to_chars >= 201611L
  auto r = std::from_chars(first, last, out);
  return r.ec == std::errc() && r.ptr == last;
#else
  std::istringstream is(std::string(first, last));
  is.imbue(std::locale::classic());
  is >> out;
  return !is.fail() && is.peek() == std::char_traits<char>::eof() && std::isfinite(out);
#endif
}

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

inline void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Length of the well-formed UTF-8 sequence at s[0..n) (RFC 3629: no overlongs, no surrogates,
// nothing above U+10FFFF), or 0 if it is not one.
inline std::size_t utf8_length(const unsigned char* s, std::size_t n) {
  const unsigned char c = s[0];
  if (c < 0x80) return 1;
  std::size_t len = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // range of the second byte
  if (c >= 0xC2 && c <= 0xDF) len = 2;
  else if (c >= 0xE0 && c <= 0xEF) len = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
  else if (c >= 0xF0 && c <= 0xF4) len = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
  else return 0;
  if (n < len || s[1] < lo || s[1] > hi) return 0;
  for (std::size_t i = 2; i < len; ++i)
    if ((s[i] & 0xC0) != 0x80) return 0;
  return len;
}

class parser {
 public:
  parser(std::string_view text, std::string_view source, int max_depth)
      : text_(text), source_(source.empty() ? "<input>" : source), max_depth_(max_depth) {
    kvtrim::detail::require(max_depth > 0, "json: max_depth = ", max_depth, " must be > 0");
    if (text_.substr(0, 3) == "\xEF\xBB\xBF") pos_ = 3;  // a UTF-8 byte order mark is ignored
  }

  // True when only whitespace is left.
  bool at_end() {
    skip_ws();
    return pos_ == text_.size();
  }

  value parse_value(int depth = 0) {
    skip_ws();
    if (pos_ == text_.size()) fail("unexpected end of input, expected a value");
    switch (text_[pos_]) {
      case '{': return parse_object(depth + 1);
      case '[': return parse_array(depth + 1);
      case '"': return value(parse_string());
      case 't': literal("true"); return value(true);
      case 'f': literal("false"); return value(false);
      case 'n': literal("null"); return value();
      default:
        if (text_[pos_] == '-' || (text_[pos_] >= '0' && text_[pos_] <= '9')) return parse_number();
        fail("unexpected character ", describe(pos_), ", expected a value");
    }
  }

  [[noreturn]] void fail_here(const std::string& what) const { fail_at(pos_, what); }

  [[noreturn]] void fail_at(std::size_t at, const std::string& what) const {
    std::size_t line = 1, col = 1;
    for (std::size_t i = 0; i < at && i < text_.size(); ++i) {
      const auto c = static_cast<unsigned char>(text_[i]);
      if (c == '\n') ++line, col = 1;
      else if ((c & 0xC0) != 0x80) ++col;  // count code points, not bytes
    }
    kvtrim::detail::fail("json: ", source_, ":", line, ":", col, ": ", what);
  }

 private:
  template <class... Parts>
  [[noreturn]] void fail(const Parts&... parts) const {
    std::ostringstream os;
    (os << ... << parts);
    fail_at(pos_, os.str());
  }

  std::string describe(std::size_t at) const {
    const auto c = static_cast<unsigned char>(text_[at]);
    if (c >= 0x20 && c < 0x7F) return std::string("'") + static_cast<char>(c) + "'";
    char buf[8];
    std::snprintf(buf, sizeof buf, "0x%02X", c);
    return buf;
  }

  void skip_ws() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t' ||
                                   text_[pos_] == '\n' || text_[pos_] == '\r'))
      ++pos_;
  }

  void literal(std::string_view word) {
    if (text_.substr(pos_, word.size()) != word) fail("invalid literal, expected '", word, "'");
    pos_ += word.size();
  }

  void enter(int depth) const {
    if (depth > max_depth_) fail("nesting deeper than ", max_depth_, " levels");
  }

  value parse_array(int depth) {
    enter(depth);
    ++pos_;  // '['
    array_t out;
    skip_ws();
    if (pos_ < text_.size() && text_[pos_] == ']') return ++pos_, value(std::move(out));
    for (;;) {
      out.push_back(parse_value(depth));
      skip_ws();
      if (pos_ == text_.size()) fail("unexpected end of input inside an array, expected ',' or ']'");
      if (text_[pos_] == ']') return ++pos_, value(std::move(out));
      if (text_[pos_] != ',') fail("expected ',' or ']' in an array, got ", describe(pos_));
      ++pos_;
    }
  }

  value parse_object(int depth) {
    enter(depth);
    ++pos_;  // '{'
    object_t out;
    std::vector<std::size_t> key_pos;
    skip_ws();
    if (pos_ < text_.size() && text_[pos_] == '}') return ++pos_, value(std::move(out));
    for (;;) {
      skip_ws();
      if (pos_ == text_.size()) fail("unexpected end of input inside an object, expected a key");
      if (text_[pos_] != '"') fail("expected a string key in an object, got ", describe(pos_));
      key_pos.push_back(pos_);
      std::string key = parse_string();
      skip_ws();
      if (pos_ == text_.size() || text_[pos_] != ':')
        fail("expected ':' after object key '", key, "'");
      ++pos_;
      value v = parse_value(depth);
      out.emplace_back(std::move(key), std::move(v));
      skip_ws();
      if (pos_ == text_.size()) fail("unexpected end of input inside an object, expected ',' or '}'");
      if (text_[pos_] == '}') break;
      if (text_[pos_] != ',') fail("expected ',' or '}' in an object, got ", describe(pos_));
      ++pos_;
    }
    ++pos_;
    // Duplicate keys are rejected (a strict reader must not silently pick one of them).
    std::vector<std::size_t> order(out.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(),
                     [&](std::size_t a, std::size_t b) { return out[a].first < out[b].first; });
    for (std::size_t i = 1; i < order.size(); ++i)
      if (out[order[i - 1]].first == out[order[i]].first)
        fail_at(key_pos[order[i]], "duplicate object key '" + out[order[i]].first + "'");
    return value(std::move(out));
  }

  std::uint32_t hex4() {
    if (text_.size() - pos_ < 4) fail("truncated \\u escape");
    std::uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = text_[pos_];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= static_cast<std::uint32_t>(c - '0');
      else if (c >= 'a' && c <= 'f') v |= static_cast<std::uint32_t>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= static_cast<std::uint32_t>(c - 'A' + 10);
      else fail("invalid hex digit ", describe(pos_), " in \\u escape");
      ++pos_;
    }
    return v;
  }

  std::string parse_string() {
    ++pos_;  // opening quote
    std::string out;
    for (;;) {
      if (pos_ == text_.size()) fail("unexpected end of input inside a string");
      const auto c = static_cast<unsigned char>(text_[pos_]);
      if (c == '"') return ++pos_, out;
      if (c < 0x20) fail("unescaped control character ", describe(pos_), " in a string");
      if (c == '\\') {
        if (++pos_ == text_.size()) fail("unexpected end of input in an escape");
        const char e = text_[pos_++];
        switch (e) {
          case '"': out += '"'; break;
          case '\\': out += '\\'; break;
          case '/': out += '/'; break;
          case 'b': out += '\b'; break;
          case 'f': out += '\f'; break;
          case 'n': out += '\n'; break;
          case 'r': out += '\r'; break;
          case 't': out += '\t'; break;
          case 'u': {
            const std::size_t at = pos_ - 2;
            std::uint32_t cp = hex4();
            if (cp >= 0xDC00 && cp <= 0xDFFF) fail_at(at, "lone low surrogate in \\u escape");
            if (cp >= 0xD800 && cp <= 0xDBFF) {
              if (text_.substr(pos_, 2) != "\\u")
                fail_at(at, "high surrogate not followed by a \\u low surrogate");
              pos_ += 2;
              const std::uint32_t lo = hex4();
              if (lo < 0xDC00 || lo > 0xDFFF)
                fail_at(at, "high surrogate not followed by a low surrogate");
              cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            append_utf8(out, cp);
            break;
          }
          default: pos_ -= 2; fail("invalid escape '\\", e, "'");
        }
        continue;
      }
      const std::size_t len = utf8_length(reinterpret_cast<const unsigned char*>(text_.data()) + pos_,
                                          text_.size() - pos_);
      if (len == 0) fail("invalid UTF-8 byte ", describe(pos_), " in a string");
      out.append(text_.data() + pos_, len);
      pos_ += len;
    }
  }

  value parse_number() {
    const std::size_t start = pos_;
    auto digit = [&] { return pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9'; };
    if (text_[pos_] == '-') ++pos_;
    if (!digit()) fail("expected a digit in a number");
    if (text_[pos_] == '0') {
      ++pos_;
      if (digit()) fail_at(start, "leading zeros are not allowed in a number");
    } else {
      while (digit()) ++pos_;
    }
    if (pos_ < text_.size() && text_[pos_] == '.') {
      ++pos_;
      if (!digit()) fail("expected a digit after the decimal point");
      while (digit()) ++pos_;
    }
    if (pos_ < text_.size() && (text_[pos_] == 'e' || text_[pos_] == 'E')) {
      ++pos_;
      if (pos_ < text_.size() && (text_[pos_] == '+' || text_[pos_] == '-')) ++pos_;
      if (!digit()) fail("expected a digit in the exponent");
      while (digit()) ++pos_;
    }
    double d = 0.0;
    if (!parse_double(text_.data() + start, text_.data() + pos_, d))
      fail_at(start, "number " + std::string(text_.substr(start, pos_ - start)) +
                         " is out of the range of a double");
    return value(d);
  }

  std::string_view text_;
  std::string source_;
  int max_depth_;
  std::size_t pos_ = 0;
};

inline void dump_string(std::string& out, const std::string& s) {
  out += '"';
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      const std::size_t len =
          utf8_length(reinterpret_cast<const unsigned char*>(s.data()) + i, s.size() - i);
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

// Parses exactly one JSON value (surrounding whitespace allowed). `source` names the input in
// error messages ("kvtrim: json: <source>:<line>:<column>: <what>"; columns count code points).
inline value parse(std::string_view text, std::string_view source = {},
                   int max_depth = default_max_depth) {
  detail::parser p(text, source, max_depth);
  value v = p.parse_value();
  if (!p.at_end()) p.fail_here("trailing characters after the JSON value");
  return v;
}

// Parses a sequence of JSON values separated by whitespace (JSON Lines, or values written one
// after another); an input of only whitespace gives an empty sequence.
inline std::vector<value> parse_sequence(std::string_view text, std::string_view source = {},
                                         int max_depth = default_max_depth) {
  detail::parser p(text, source, max_depth);
  std::vector<value> out;
  while (!p.at_end()) out.push_back(p.parse_value());
  return out;
}

// Writes `v` as JSON: compact when indent < 0, else pretty with `indent` spaces per level (arrays
// of scalars on one line). Keys come out sorted; numbers as %.17g; non-finite numbers and strings
// that are not valid UTF-8 are rejected.
inline std::string dump(const value& v, int indent = -1) {
  std::string out;
  detail::dump_value(out, v, indent, 0);
  return out;
}

}  // namespace kvtrim::json
