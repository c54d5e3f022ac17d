#pragma once
// FNV-1a 64 in hex: the short fingerprints inside resume keys (calibration trials, eval
// records). Keys hold it byte for byte, so it must never change.
#include <cstdint>
#include <cstdio>
#include <string>

namespace kvhost {

inline std::string fnv_hex(const std::string& s) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  char b[17];
  std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(h));
  return b;
}

}  // namespace kvhost
