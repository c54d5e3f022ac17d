#include "calibrate/stage.hpp"

namespace kvhost::calib {

stage_run::stage_run(const std::string& stage, const calibration_options& opt) : log(opt.resume_dir, stage) {
  rep.stage = stage;
  pg.stage = stage;
  pg.on = opt.progress;
}

const record* stage_run::trial(calibration_run& cal, const std::string& key, bool& reused,
                               const std::function<record()>& run) {
  const record* r = log.find(key);
  reused = r != nullptr;
  if (reused) {
    ++rep.reused;
    return r;
  }
  if (!cal.budget_left()) return nullptr;
  log.add(run());
  ++cal.trials_run;
  ++rep.run;
  return log.find(key);
}

void stage_run::report(const record& r, const std::string& what, double units, bool reused) {
  rep.trial_seconds += r.seconds;
  pg.report(what, units, r.seconds, reused);
}

}  // namespace kvhost::calib
