#pragma once
// `kvtrim calibrate`'s progress: one line per trial on stderr with an ETA from the trials run in
// this call (reused ones cost nothing and do not count towards the rate).
#include <cstdint>
#include <string>

namespace kvhost::calib {

std::string format_seconds(double s);  // "42s", "3m07s", "2h05m"

struct progress {
  std::string stage;
  int64_t total = 0, index = 0;
  double units_total = 0, units_done = 0;  // work units: prompt tokens + a decode allowance
  double run_units = 0, run_seconds = 0;   // of the trials run in this call (the ETA's rate)
  bool on = true;
  void report(const std::string& what, double units, double secs, bool reused);
};

}  // namespace kvhost::calib
