#pragma once
// EXPECT_ERROR_HAS(statement, text): the statement throws kvtrim::error whose message contains
// text — bad input must be rejected with a message that names what is wrong.
#include <string>

#include "kvtrim/core/error.hpp"

namespace kvtest {
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const kvtrim::error& e) {
    return e.what();
  }
  return "";
}
}  // namespace kvtest

#define EXPECT_ERROR_HAS(stmt, text)                                      \
  do {                                                                    \
    const std::string msg_ = kvtest::error_of([&] { stmt; });             \
    EXPECT_NE(msg_, "") << "no kvtrim::error from: " #stmt;               \
    EXPECT_NE(msg_.find(text), std::string::npos) << "message: " << msg_; \
  } while (0)
