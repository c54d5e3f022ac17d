#pragma once
// A calibration's resume directory: run.json binds it to one model file and keeps the run's date;
// <stage>.jsonl holds one record per finished trial, appended as it ends, so an interrupted run
// continues where it stopped and ends with the same profile as one uninterrupted run.
//
// The records are written by the library's JSON writer (kvtrim/profile/json_write.hpp), not
// nlohmann-json: their `state` is the accumulators' own to_json(), and numbers written as %.17g
// keep a record's bytes the same as in resume directories of earlier versions.
#include <map>
#include <string>

#include "kvtrim/profile/json.hpp"

namespace kvhost::calib {

// One trial's (or stage-"layers" sample's) record.
struct record {
  std::string key;
  bool kept = false;
  double seconds = 0;
  std::string output;
  double quality = 0;            // ROUGE-1 recall, F1 (needle stages)
  kvtrim::json::value state;     // the accumulator's to_json()
  kvtrim::json::value extra;     // stage "heads": span_mass, copy_score trial sums
};

// Creates `dir` if needed and binds it to the model: a run.json of another model's sha256 is an
// error. Returns the run's date (run.json's, or now for a new directory).
std::string open_resume_dir(const std::string& dir, const std::string& model_sha256);

// Append-only per-stage log of finished trials. A torn last line (a crash mid-write) is ignored.
// An empty directory keeps the records in memory only.
class trial_log {
 public:
  trial_log(const std::string& dir, const std::string& stage);
  const record* find(const std::string& key) const;
  void add(const record& r);

 private:
  std::string path_;
  std::map<std::string, record> done_;
};

}  // namespace kvhost::calib
