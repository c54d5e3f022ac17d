#pragma once
// Per-trial, per-head score storage shared by the head-scoring accumulators. Each kept trial's
// [layer][q_head] sums are kept as they are (as CompressKV's and HeadKV's scripts keep per-trial
// lists) and the mean is taken at the end in trial order, so merging runs split at trial
// boundaries gives bit-for-bit the result of one uninterrupted run.
#include <cmath>
#include <string>
#include <vector>

#include "kvtrim/core/error.hpp"
#include "kvtrim/core/view.hpp"
#include "kvtrim/profile/json.hpp"
#include "kvtrim/profile/profile.hpp"

namespace kvtrim::detail {

inline std::int64_t json_i64(const json::value& v, const std::string& what, std::int64_t lo, std::int64_t hi) {
  require(v.is_number(), what, " must be a number, got ", json::type_name(v.kind()));
  const double d = v.as_number();
  require(d == std::floor(d) && d >= static_cast<double>(lo) && d <= static_cast<double>(hi), what,
          " = ", d, " must be an integer in [", lo, ", ", hi, "]");
  return static_cast<std::int64_t>(d);
}

// A [rows][cols] matrix of finite values >= 0 from JSON, flattened row-major.
inline std::vector<double> json_flat_matrix(const json::value& v, const std::string& what, int rows, int cols) {
  const auto m = json_matrix(v, what);
  require(m.size() == static_cast<std::size_t>(rows), what, " has ", m.size(), " rows, expected ", rows);
  std::vector<double> out;
  out.reserve(static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols));
  for (std::size_t r = 0; r < m.size(); ++r) {
    require(m[r].size() == static_cast<std::size_t>(cols), what, "[", r, "] has ", m[r].size(),
            " entries, expected ", cols);
    for (double x : m[r]) {
      require(std::isfinite(x) && x >= 0.0, what, "[", r, "] holds ", x, "; values must be finite and >= 0");
      out.push_back(x);
    }
  }
  return out;
}

inline json::value json_of_flat(const std::vector<double>& flat, int rows, int cols) {
  json::array_t a;
  for (int r = 0; r < rows; ++r)
    a.push_back(json_of(std::vector<double>(flat.begin() + static_cast<std::ptrdiff_t>(r) * cols,
                                            flat.begin() + static_cast<std::ptrdiff_t>(r + 1) * cols)));
  return json::value(std::move(a));
}

class head_trials {
 public:
  head_trials(int layers, int q_heads, const char* owner) : owner_(owner), layers_(layers), q_heads_(q_heads) {
    require(layers > 0, owner, ": layers = ", layers, " must be > 0");
    require(q_heads > 0, owner, ": q_heads = ", q_heads, " must be > 0");
  }

  int layers() const { return layers_; }
  int q_heads() const { return q_heads_; }
  bool open() const { return open_; }
  index_t kept() const { return static_cast<index_t>(kept_.size()); }
  index_t discarded() const { return discarded_; }

  void begin() {
    require(!open_, owner_, ": begin_trial() while a trial is open; call end_trial() first");
    current_.assign(static_cast<std::size_t>(layers_) * static_cast<std::size_t>(q_heads_), 0.0);
    open_ = true;
  }
  void end(bool keep) {
    require_open("end_trial");
    if (keep) kept_.push_back(std::move(current_));
    else ++discarded_;
    current_.clear();
    open_ = false;
  }
  void require_open(const char* call) const {
    require(open_, owner_, ": ", call, "() outside a trial; call begin_trial() first");
  }
  void check_layer(int layer) const {
    require(layer >= 0 && layer < layers_, owner_, ": layer = ", layer, " must be in [0, ", layers_, ")");
  }
  double& sum(int layer, int head) {
    return current_[static_cast<std::size_t>(layer) * static_cast<std::size_t>(q_heads_) +
                    static_cast<std::size_t>(head)];
  }

  // [layer][q_head] mean over kept trials (0 when none), summed in trial order.
  std::vector<std::vector<double>> mean() const {
    std::vector<std::vector<double>> out(static_cast<std::size_t>(layers_),
                                         std::vector<double>(static_cast<std::size_t>(q_heads_), 0.0));
    if (kept_.empty()) return out;
    for (int l = 0; l < layers_; ++l)
      for (int h = 0; h < q_heads_; ++h) {
        const std::size_t i = static_cast<std::size_t>(l) * static_cast<std::size_t>(q_heads_) +
                              static_cast<std::size_t>(h);
        double s = 0.0;
        for (const auto& t : kept_) s += t[i];
        out[static_cast<std::size_t>(l)][static_cast<std::size_t>(h)] = s / static_cast<double>(kept_.size());
      }
    return out;
  }

  // Appends the other run's trials after this run's.
  void merge(const head_trials& o) {
    require(o.layers_ == layers_ && o.q_heads_ == q_heads_, owner_, ": merge of layers = ", o.layers_,
            ", q_heads = ", o.q_heads_, " into layers = ", layers_, ", q_heads = ", q_heads_);
    require(!open_ && !o.open_, owner_, ": merge() while a trial is open; end it first");
    kept_.insert(kept_.end(), o.kept_.begin(), o.kept_.end());
    discarded_ += o.discarded_;
  }

  // {"<layer>-<head>": [score of each kept trial]} — the file layout HeadKV and CompressKV's
  // head-detection scripts write, so their tools can read kvtrim's calibration.
  json::value head_score_json() const {
    json::value v = json::value(json::object_t{});
    for (int l = 0; l < layers_; ++l)
      for (int h = 0; h < q_heads_; ++h) {
        json::array_t a;
        for (const auto& t : kept_)
          a.emplace_back(t[static_cast<std::size_t>(l) * static_cast<std::size_t>(q_heads_) +
                           static_cast<std::size_t>(h)]);
        v.set(std::to_string(l) + "-" + std::to_string(h), json::value(std::move(a)));
      }
    return v;
  }

  void fill_profile(std::vector<std::vector<double>>& field, profile& p, const std::string& what) const {
    require(p.layers == layers_ && p.q_heads == q_heads_, owner_, ": profile for model '", p.model,
            "' has layers = ", p.layers, ", q_heads = ", p.q_heads, " but the scores have layers = ",
            layers_, ", q_heads = ", q_heads_);
    require(!open_, owner_, ": to_profile() while a trial is open; end it first");
    require(!kept_.empty(), owner_, ": to_profile() with no kept trials");
    field = mean();
    p.provenance[what] = std::string("kvtrim ") + owner_ + ": mean over " + std::to_string(kept_.size()) +
                         " kept trials (" + std::to_string(discarded_) + " discarded)";
  }

  // Common JSON part: shape, kept trials, discard count, open-trial sums.
  void write(json::value& v, const char* kind) const {
    v.set("kind", kind);
    v.set("version", 1);
    v.set("layers", layers_);
    v.set("q_heads", q_heads_);
    json::array_t trials;
    for (const auto& t : kept_) trials.push_back(json_of_flat(t, layers_, q_heads_));
    v.set("trials", json::value(std::move(trials)));
    v.set("discarded_trials", discarded_);
    if (open_) v.set("open_trial_sums", json_of_flat(current_, layers_, q_heads_));
  }

  static head_trials read(const json::value& v, const char* kind) {
    require(v.is_object(), kind, ": state must be a JSON object");
    const json::value* k = v.find("kind");
    require(k && k->is_string() && k->as_string() == kind, kind, ": state is not a ", kind,
            " (\"kind\" = ", k ? json::dump(*k) : std::string("missing"), ")");
    require(json_int(json_field(v, "version", kind), std::string(kind) + ": version", 1, 1 << 30) == 1,
            kind, ": unsupported state version");
    head_trials t(json_int(json_field(v, "layers", kind), std::string(kind) + ": layers", 1, 1 << 20),
                  json_int(json_field(v, "q_heads", kind), std::string(kind) + ": q_heads", 1, 1 << 20), kind);
    const json::value& trials = json_field(v, "trials", kind);
    require(trials.is_array(), kind, ": \"trials\" must be an array");
    for (std::size_t i = 0; i < trials.as_array().size(); ++i)
      t.kept_.push_back(json_flat_matrix(trials.as_array()[i], std::string(kind) + ": trials[" +
                                         std::to_string(i) + "]", t.layers_, t.q_heads_));
    t.discarded_ = json_i64(json_field(v, "discarded_trials", kind), std::string(kind) + ": discarded_trials",
                            0, std::int64_t(1) << 52);
    if (const json::value* s = v.find("open_trial_sums")) {
      t.current_ = json_flat_matrix(*s, std::string(kind) + ": open_trial_sums", t.layers_, t.q_heads_);
      t.open_ = true;
    }
    return t;
  }

 private:
  const char* owner_;
  int layers_;
  int q_heads_;
  bool open_ = false;
  std::vector<std::vector<double>> kept_;  // per kept trial, [layer][q_head] row-major
  std::vector<double> current_;            // the open trial's sums
  index_t discarded_ = 0;
};

// A row of `n_keys` attention weights for each query head, `stride` elements apart.
inline void check_attention_rows(const char* owner, const float* attn, index_t n_keys, index_t stride) {
  require(attn != nullptr, owner, ": attention rows are null");
  require(n_keys > 0, owner, ": n_keys = ", n_keys, " must be > 0");
  require(stride >= n_keys, owner, ": row_stride = ", stride, " must be >= n_keys = ", n_keys);
}

}  // namespace kvtrim::detail
