#pragma once
// Append-only JSONL logs (eval samples.jsonl, calibration resume files) and output paths.
#include <string>

namespace kvhost {

// Cuts a line a crash left without its newline off the end of an append-only log, so the next
// append starts a fresh line and the torn one does not stay in the file. No-op if the file is
// absent or ends with a newline. Throws std::runtime_error when the file cannot be cut.
void truncate_torn_tail(const std::string& path);

// Throws std::runtime_error naming `what` (an option, "--out") unless a file can be created in
// `dir` (created first when create is set): checked before long work so that it cannot fail at
// the end. The probe file has a unique name and is removed.
void check_writable_dir(const std::string& dir, const std::string& what, bool create = false);

// The same for the directory that will hold `file`; also rejects a `file` that is a directory.
void check_writable_file(const std::string& file, const std::string& what);

}  // namespace kvhost
