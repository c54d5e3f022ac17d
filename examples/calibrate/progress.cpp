#include "calibrate/progress.hpp"

#include <cmath>
#include <cstdio>

namespace kvhost::calib {

std::string format_seconds(double s) {
  char b[32];
  if (s < 90) std::snprintf(b, sizeof b, "%.0fs", s);
  else if (s < 5400) std::snprintf(b, sizeof b, "%.0fm%02.0fs", std::floor(s / 60), std::fmod(s, 60.0));
  else std::snprintf(b, sizeof b, "%.0fh%02.0fm", std::floor(s / 3600), std::floor(std::fmod(s, 3600.0) / 60));
  return b;
}

void progress::report(const std::string& what, double units, double secs, bool reused) {
  ++index;
  units_done += units;
  if (!reused) {
    run_units += units;
    run_seconds += secs;
  }
  if (!on) return;
  const double eta = run_units > 0 ? run_seconds / run_units * (units_total - units_done) : 0.0;
  std::fprintf(stderr, "[%s %lld/%lld] %s%s  %.1fs  ETA %s\n", stage.c_str(), static_cast<long long>(index),
               static_cast<long long>(total), what.c_str(), reused ? " (from resume dir)" : "", secs,
               format_seconds(eta).c_str());
}

}  // namespace kvhost::calib
