#pragma once
// Whole files in and out. Profiles and calibration resume files are written whole or not at all:
// the text goes to `<path>.tmp.<pid>.<n>`, is flushed to disk (fsync) and then renamed over
// `<path>`, so a crash or a failing write never leaves a truncated file where a good one was;
// temp files of crashed writers are removed by the next successful write of the same path.
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <system_error>

#if defined(_WIN32)
#include <process.h>
#else
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

#include "kvtrim/core/error.hpp"

namespace kvtrim {

// The whole content of a file; an error names the path when it cannot be read.
inline std::string read_text_file(const std::string& path) {
  std::error_code ec;
  detail::require(!std::filesystem::is_directory(path, ec), "cannot read '", path, "': it is a directory");
  std::ifstream in(path, std::ios::binary);
  detail::require(static_cast<bool>(in), "cannot open '", path, "' for reading: ",
                  std::generic_category().message(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  detail::require(!in.bad(), "cannot read '", path, "'");
  return ss.str();
}

namespace detail {

inline std::string temp_path_for(const std::string& path) {
  static std::atomic<unsigned long> counter{0};  // distinct names for concurrent writers
#if defined(_WIN32)
  const long pid = static_cast<long>(_getpid());
#else
  const long pid = static_cast<long>(::getpid());
#endif
  return path + ".tmp." + std::to_string(pid) + "." + std::to_string(counter++);
}

#if !defined(_WIN32)
// Temp files of `path` left by writers that crashed (`<path>.tmp.<pid>.<n>` whose process no
// longer runs): removed after a successful write, so a crash leaves no litter for long.
inline void remove_stale_temps(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path p(path);
  const std::string prefix = p.filename().string() + ".tmp.";
  const fs::path dir = p.parent_path().empty() ? fs::path(".") : p.parent_path();
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.rfind(prefix, 0) != 0) continue;
    const std::string rest = name.substr(prefix.size());  // "<pid>.<n>"
    const auto dot = rest.find('.');
    if (dot == std::string::npos || dot == 0 || dot + 1 == rest.size() ||
        rest.find_first_not_of("0123456789.") != std::string::npos || rest.find('.', dot + 1) != std::string::npos)
      continue;
    const long pid = std::strtol(rest.substr(0, dot).c_str(), nullptr, 10);
    if (pid <= 0 || pid == static_cast<long>(::getpid())) continue;
    if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) fs::remove(it->path(), ec);
  }
}
#endif

}  // namespace detail

// Replaces `path` with `text`, whole or not at all. On failure `path` is untouched (or still
// absent), the temporary file is removed and kvtrim::error names the path and the reason.
inline void write_text_file_atomic(const std::string& path, const std::string& text) {
  detail::require(!path.empty(), "write_text_file_atomic: empty path");
  const std::string tmp = detail::temp_path_for(path);
#if defined(_WIN32)
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    detail::require(static_cast<bool>(out), "cannot create '", tmp, "' to write '", path, "'");
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    out.flush();
    if (!out) {
      out.close();
      std::remove(tmp.c_str());
      detail::fail("cannot write '", path, "'");
    }
  }
  std::remove(path.c_str());  // Windows rename does not replace; not atomic there
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    detail::fail("cannot rename '", tmp, "' to '", path, "'");
  }
#else
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  detail::require(fd >= 0, "cannot create '", tmp, "' to write '", path,
                  "': ", std::generic_category().message(errno));
  auto give_up = [&](const char* what) {
    const int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    detail::fail("cannot write '", path, "' (", what, "): ", std::generic_category().message(err));
  };
  const char* p = text.data();
  std::size_t left = text.size();
  while (left > 0) {
    const ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) give_up("write");
    p += n;
    left -= static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) give_up("fsync");
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    detail::fail("cannot write '", path, "' (close): ", std::generic_category().message(err));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    detail::fail("cannot rename '", tmp, "' to '", path, "': ", std::generic_category().message(err));
  }
  // Make the rename itself durable; a failure here leaves a complete file, so it is not an error.
  const std::string::size_type slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
  detail::remove_stale_temps(path);
#endif
}

}  // namespace kvtrim
