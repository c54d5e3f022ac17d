#pragma once
// kvtrim's JSON value: what profiles, imported artefacts and the calibration accumulators' state
// are read into and written from (json_read.hpp, json_write.hpp). kvtrim may depend only on the
// standard library, Eigen and OpenMP, so it carries its own. Object keys are kept sorted so the
// same value always writes the same bytes; numbers are doubles.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "kvtrim/core/error.hpp"
#include "kvtrim/core/utf8.hpp"

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
}  // namespace kvtrim::json
