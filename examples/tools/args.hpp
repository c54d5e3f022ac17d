#pragma once
// A small command-line parser for the kvtrim tools: `--name value`, `--name=value` and flags;
// unknown options and missing values are errors (one line, non-zero exit), `--help` prints usage.
#include <limits>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "numbers.hpp"

namespace kvtools {

struct usage_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class args {
 public:
  // `valued` lists options that take a value, `flags` those that don't (without the leading --).
  args(int argc, char** argv, int first, std::set<std::string> valued, std::set<std::string> flags)
      : valued_(std::move(valued)), flags_(std::move(flags)) {
    for (int i = first; i < argc; ++i) {
      std::string a = argv[i];
      if (a.rfind("--", 0) != 0) {
        positional_.push_back(a);
        continue;
      }
      a = a.substr(2);
      std::string value;
      bool has_value = false;
      if (auto eq = a.find('='); eq != std::string::npos) {
        value = a.substr(eq + 1);
        a = a.substr(0, eq);
        has_value = true;
      }
      if (a == "help") {
        help_ = true;
        continue;
      }
      if (flags_.count(a)) {
        if (has_value) throw usage_error("--" + a + " takes no value");
        set_.insert(a);
      } else if (valued_.count(a)) {
        if (!has_value) {
          if (i + 1 >= argc) throw usage_error("--" + a + " needs a value");
          value = argv[++i];
        }
        values_[a] = value;
      } else {
        throw usage_error("unknown option --" + a + " (see --help)");
      }
    }
  }

  bool help() const { return help_; }
  bool flag(const std::string& name) const { return set_.count(name) > 0; }
  bool has(const std::string& name) const { return values_.count(name) > 0; }
  const std::vector<std::string>& positional() const { return positional_; }

  std::string str(const std::string& name, const std::string& def = "") const {
    auto it = values_.find(name);
    return it == values_.end() ? def : it->second;
  }
  std::string required(const std::string& name) const {
    auto it = values_.find(name);
    if (it == values_.end()) throw usage_error("--" + name + " is required (see --help)");
    return it->second;
  }
  long long integer(const std::string& name, long long def) const {
    if (!has(name)) return def;
    return parse_int(name, str(name));
  }
  // An integer in [lo, hi] (the default is not checked): the way to read a value that is
  // narrowed (to int, say) or that later arithmetic multiplies.
  long long integer_in(const std::string& name, long long def, long long lo, long long hi) const {
    if (!has(name)) return def;
    return parse_int_in(name, str(name), lo, hi);
  }
  int int_in(const std::string& name, int def, int lo = std::numeric_limits<int>::min(),
             int hi = std::numeric_limits<int>::max()) const {
    return static_cast<int>(integer_in(name, def, lo, hi));
  }
  // A finite real number written whole.
  double number(const std::string& name, double def) const {
    if (!has(name)) return def;
    return parse_real(name, str(name));
  }
  // Comma-separated list.
  std::vector<std::string> list(const std::string& name, const std::string& def = "") const {
    std::vector<std::string> out;
    std::string v = str(name, def), cur;
    for (char c : v) {
      if (c == ',') {
        if (!cur.empty()) out.push_back(cur);
        cur.clear();
      } else {
        cur += c;
      }
    }
    if (!cur.empty()) out.push_back(cur);
    return out;
  }
  static long long parse_int(const std::string& name, const std::string& v) {
    const auto x = parse_strict_integer(v);
    if (!x) throw usage_error("--" + name + ": '" + v + "' is not an integer (or does not fit 64 bits)");
    return *x;
  }
  static long long parse_int_in(const std::string& name, const std::string& v, long long lo, long long hi) {
    const long long x = parse_int(name, v);
    if (x < lo || x > hi)
      throw usage_error("--" + name + " " + v + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return x;
  }
  static double parse_real(const std::string& name, const std::string& v) {
    const auto d = parse_strict_number(v);
    if (!d) throw usage_error("--" + name + ": '" + v + "' is not a finite number");
    return *d;
  }

 private:
  std::set<std::string> valued_, flags_;
  std::map<std::string, std::string> values_;
  std::set<std::string> set_;
  std::vector<std::string> positional_;
  bool help_ = false;
};

}  // namespace kvtools
