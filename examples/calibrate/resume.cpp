#include "calibrate/resume.hpp"

#include "common/log_file.hpp"

#include <ctime>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "kvtrim/profile/file.hpp"
#include "kvtrim/profile/profile.hpp"

namespace kvhost::calib {

namespace fs = std::filesystem;
namespace kj = kvtrim::json;

namespace {

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char b[32];
  std::strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return b;
}

kj::value to_json(const record& r) {
  kj::value v;
  v.set("key", r.key);
  v.set("kept", r.kept);
  v.set("seconds", r.seconds);
  v.set("output", r.output);
  v.set("quality", r.quality);
  v.set("state", r.state);
  if (!r.extra.is_null()) v.set("extra", r.extra);
  return v;
}

record from_json(const kj::value& v) {
  kvtrim::detail::require(v.is_object(), "a record must be a JSON object");
  record r;
  r.key = v.at("key").as_string();
  r.kept = v.at("kept").as_bool();
  r.seconds = v.at("seconds").as_number();
  r.output = v.at("output").as_string();
  r.quality = v.at("quality").as_number();
  r.state = v.at("state");
  if (const kj::value* e = v.find("extra")) r.extra = *e;
  return r;
}

}  // namespace

std::string open_resume_dir(const std::string& dir, const std::string& model_sha256) {
  if (dir.empty()) return utc_now();
  fs::create_directories(dir);
  const std::string run = dir + "/run.json";
  if (fs::exists(run)) {
    const nlohmann::json v = nlohmann::json::parse(kvtrim::read_text_file(run));
    const std::string sha = v.at("model_sha256").get<std::string>();
    if (sha != model_sha256)
      throw std::runtime_error("resume directory " + dir + " belongs to a run on model sha256 " + sha + ", not " +
                               model_sha256 + "; use another --resume-dir");
    return v.at("date").get<std::string>();
  }
  const std::string date = utc_now();
  const nlohmann::json v = {{"model_sha256", model_sha256}, {"date", date}};  // keys come out sorted
  kvtrim::write_text_file_atomic(run, v.dump(2) + "\n");
  return date;
}

// A torn line (a crash mid-write) is ignored and a torn last line cut off before the next
// append; a JSON line that is not a trial record is an error naming the file and line.
trial_log::trial_log(const std::string& dir, const std::string& stage) {
  if (dir.empty()) return;
  path_ = dir + "/" + stage + ".jsonl";
  std::ifstream in(path_, std::ios::binary);
  std::string line;
  int64_t lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    kj::value v;
    try {
      v = kj::parse(line, path_);
    } catch (const std::exception&) {
      continue;  // an incomplete line from an interrupted write: that trial runs again
    }
    try {
      record r = from_json(v);
      done_[r.key] = std::move(r);
    } catch (const std::exception& e) {
      throw std::runtime_error(path_ + ":" + std::to_string(lineno) + ": not a calibration trial record (" +
                               kvtrim::detail::strip_prefix(e.what()) + "); move the file away to rerun its trials");
    }
  }
  in.close();
  truncate_torn_tail(path_);
}

const record* trial_log::find(const std::string& key) const {
  auto it = done_.find(key);
  return it == done_.end() ? nullptr : &it->second;
}

void trial_log::add(const record& r) {
  done_[r.key] = r;
  if (path_.empty()) return;
  std::ofstream out(path_, std::ios::app | std::ios::binary);
  out << kj::dump(to_json(r)) << "\n";
  out.flush();
  if (!out) throw std::runtime_error("cannot append to " + path_);
}

}  // namespace kvhost::calib
