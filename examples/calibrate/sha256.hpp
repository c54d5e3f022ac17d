#pragma once
// SHA-256 of a file for a profile's provenance (the model's and the calibration data's digests),
// by OpenSSL's libcrypto.
#include <string>

namespace kvhost {

// Lower-case hex; throws std::runtime_error when the file cannot be read.
std::string sha256_file(const std::string& path);

}  // namespace kvhost
