#pragma once
// A strict JSON reader (RFC 8259) for profiles and imported artefacts: errors name
// source:line:column, duplicate keys and invalid UTF-8 are rejected, nesting is bounded, and
// numbers are converted correctly rounded whatever the process locale.
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <locale>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "kvtrim/profile/json_value.hpp"

namespace kvtrim::json {
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
            utf8::append(out, cp);
            break;
          }
          default: pos_ -= 2; fail("invalid escape '\\", e, "'");
        }
        continue;
      }
      const std::size_t len = utf8::sequence_length(reinterpret_cast<const unsigned char*>(text_.data()) + pos_,
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

}  // namespace kvtrim::json
