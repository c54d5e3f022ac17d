#include "common/log_file.hpp"

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <system_error>

#include <fcntl.h>
#include <unistd.h>

namespace kvhost {

namespace fs = std::filesystem;

void truncate_torn_tail(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return;
  const auto size = fs::file_size(path, ec);
  if (ec || size == 0) return;
  std::ifstream in(path, std::ios::binary);
  // The last newline: everything after it is a line a crash cut short.
  uintmax_t keep = size;
  const uintmax_t chunk = 4096;
  std::string buf;
  while (keep > 0) {
    const uintmax_t from = keep > chunk ? keep - chunk : 0;
    buf.resize(static_cast<size_t>(keep - from));
    in.seekg(static_cast<std::streamoff>(from));
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    if (!in) throw std::runtime_error("cannot read " + path);
    const auto nl = buf.rfind('\n');
    if (nl != std::string::npos) {
      keep = from + nl + 1;
      break;
    }
    keep = from;
  }
  if (keep == size) return;
  fs::resize_file(path, keep, ec);
  if (ec) throw std::runtime_error("cannot cut the torn last line of " + path + ": " + ec.message());
}

void check_writable_dir(const std::string& dir, const std::string& what, bool create) {
  std::error_code ec;
  if (create) fs::create_directories(dir, ec);
  if (ec) throw std::runtime_error(what + ": cannot create the directory " + dir + ": " + ec.message());
  if (!fs::is_directory(dir, ec))
    throw std::runtime_error(what + ": the directory " + dir + " does not exist");
  static std::atomic<unsigned> counter{0};
  const std::string probe = (fs::path(dir) / (".kvtrim-write-test." + std::to_string(::getpid()) + "." +
                                              std::to_string(counter++))).string();
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) throw std::runtime_error(what + ": cannot write in " + dir + ": " + std::strerror(errno));
  ::close(fd);
  ::unlink(probe.c_str());
}

void check_writable_file(const std::string& file, const std::string& what) {
  std::error_code ec;
  if (file.empty()) throw std::runtime_error(what + ": empty path");
  if (fs::is_directory(file, ec)) throw std::runtime_error(what + " " + file + " is a directory");
  const fs::path parent = fs::path(file).parent_path();
  check_writable_dir(parent.empty() ? std::string(".") : parent.string(), what + " " + file);
}

}  // namespace kvhost
