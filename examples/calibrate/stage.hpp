#pragma once
// What the calibration stages share (internal to examples/calibrate): the run's context, a stage's
// report / resume log / progress, and the two stages that run trials of their own kind.
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "calibrate/calibration.hpp"
#include "calibrate/data.hpp"
#include "calibrate/progress.hpp"
#include "calibrate/resume.hpp"
#include "kvtrim/calibrate/layer_eviction_error.hpp"

namespace kvhost::calib {

using clock_type = std::chrono::steady_clock;

// One calibrate() call: the model, its data, and the trials run so far against max_trials.
struct calibration_run {
  const model& m;
  const tokenizer& tok;
  const std::vector<int32_t>& stops;
  const calibration_options& opt;
  calibration_data& data;
  int64_t trials_run = 0;

  bool budget_left() const { return opt.max_trials < 0 || trials_run < opt.max_trials; }
};

// A stage's report, resume log and progress line. Trials found in the log are reused; the others
// run while max_trials allows and are appended to it.
struct stage_run {
  stage_report rep;
  trial_log log;
  progress pg;

  stage_run(const std::string& stage, const calibration_options& opt);

  // The trial's record, from the log or from run(); nullptr when max_trials is spent.
  const record* trial(calibration_run& cal, const std::string& key, bool& reused, const std::function<record()>& run);

  // Adds the trial's own time (reused ones too) and prints its progress line.
  void report(const record& r, const std::string& what, double units, bool reused);
};

// A needle stage's grid: needles x lengths x depths, run in that order.
struct needle_grid {
  const char* stage;  // "heads" or "reasoning": the trial keys' prefix
  const std::vector<named_needle>& needles;
  const std::vector<int64_t>& lengths;
  int depths;
  size_t first_start, needle_step;  // haystack start: first_start + needle * needle_step + length * 3 + depth
  bool semantic;                    // heads (true: semantic score + comparisons) or reasoning
  const char* score;                // the quality's name on the progress line
};

// Runs or reuses every trial of a needle stage, handing each record to `take`. False: stopped by
// max_trials.
bool run_needle_stage(calibration_run& cal, const needle_grid& g, stage_report& rep,
                      const std::function<void(const record&)>& take);

// Stage "layers" with the compressed cache's rows chosen by `heads`' semantic retrieval heads;
// the samples' errors are merged into `total`. False: stopped by max_trials.
bool run_layer_stage(calibration_run& cal, const kvtrim::profile& heads, stage_report& rep,
                     kvtrim::layer_eviction_error& total);

// The tokens of `answer` inside the needle's tokens [span_begin, span_end): every token whose
// decoded text overlaps the answer's first occurrence in the decoded needle. Throws
// std::invalid_argument when the answer is not in the needle.
std::pair<int64_t, int64_t> answer_token_span(const tokenizer& tok, const std::vector<int32_t>& tokens,
                                              int64_t span_begin, int64_t span_end, const std::string& answer);

// What a needle trial's key adds for the observation settings: empty for kvtrim's earlier
// settings (srh_span "needle", first_step "prefill"), whose keys stay as older resume
// directories hold them; otherwise "|span=...|first=...", so a trial is never reused across them.
std::string needle_settings_suffix(const calibration_options& opt, bool semantic);

// The names' needles in the given order (all when names is empty); throws on an unknown name.
std::vector<named_needle> pick_needles(const std::vector<named_needle>& all, const std::vector<std::string>& names,
                                       const char* what);

}  // namespace kvhost::calib
