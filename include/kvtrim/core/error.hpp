#pragma once
// Errors: every bad input is rejected with kvtrim::error naming the bad value and the accepted
// range, before anything is written (DESIGN.md, "What bad input gets").
#include <sstream>
#include <stdexcept>
#include <string>

namespace kvtrim {

class error : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

namespace detail {

template <class... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  std::ostringstream os;
  os << "kvtrim: ";
  (os << ... << parts);
  throw error(os.str());
}

// Cheap check with a message built only on failure.
template <class... Parts>
void require(bool ok, const Parts&... parts) {
  if (!ok) fail(parts...);
}

}  // namespace detail
}  // namespace kvtrim
