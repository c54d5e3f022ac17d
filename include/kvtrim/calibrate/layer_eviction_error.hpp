#pragma once
// CompressKV's layer eviction error, fed by a host that decodes calibration prompts twice per
// step per layer: once with the full cache and once with the compressed one. No model inside.
//
// Definition (CompressKV longbench/model/modeling_*_new.py and pred_get_importance_score.py): at
// each decode step and layer, e = ‖O_comp − O_full‖_F / (‖O_full‖_F + ε), where O is that
// layer's attention output for the step (upstream: after o_proj); e is summed per layer over all
// steps of all samples of a dataset. weights() then L1-normalises each dataset's per-layer totals,
// averages them over datasets and renormalises to sum 1 (= the published avg_score). Upstream's
// ε is 1e-5; the default here is 1e-6.
//
// Each sample's per-layer sums are stored as they are and totals are taken in sample order, so
// merging runs split at sample boundaries reproduces one uninterrupted run bit for bit.
#include <cmath>
#include <locale>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "kvtrim/calibrate/head_trials.hpp"

namespace kvtrim {

class layer_eviction_error {
 public:
  explicit layer_eviction_error(int layers, double eps = 1e-6) : layers_(layers), eps_(eps) {
    detail::require(layers > 0, "layer_eviction_error: layers = ", layers, " must be > 0");
    detail::require(std::isfinite(eps) && eps > 0.0, "layer_eviction_error: eps = ", eps,
                    " must be finite and > 0");
  }

  int layers() const { return layers_; }
  double eps() const { return eps_; }
  bool sample_open() const { return open_; }

  // ‖comp − full‖_F / (‖full‖_F + eps) over `size` values, in double.
  static double relative_error(const float* out_full, const float* out_comp, index_t size, double eps) {
    detail::require(out_full != nullptr && out_comp != nullptr, "layer_eviction_error: null output");
    detail::require(size > 0, "layer_eviction_error: size = ", size, " must be > 0");
    double diff2 = 0.0, full2 = 0.0;
    for (index_t i = 0; i < size; ++i) {
      const double f = out_full[i], c = out_comp[i];
      diff2 += (c - f) * (c - f);
      full2 += f * f;
    }
    const double e = std::sqrt(diff2) / (std::sqrt(full2) + eps);
    detail::require(std::isfinite(e), "layer_eviction_error: outputs are not finite");
    return e;
  }

  // Opens a sample (one calibration prompt) of `dataset`.
  void begin_sample(const std::string& dataset) {
    detail::require(!open_, "layer_eviction_error: begin_sample() while a sample is open; call end_sample() first");
    detail::require(!dataset.empty(), "layer_eviction_error: empty dataset name");
    dataset_ = dataset;
    current_.assign(static_cast<std::size_t>(layers_), 0.0);
    open_ = true;
  }

  // One layer at one decode step: the layer's attention outputs with the full and with the
  // compressed cache, `size` floats each (same layout).
  void on_step(int layer, const float* out_full, const float* out_comp, index_t size) {
    detail::require(open_, "layer_eviction_error: on_step() outside a sample; call begin_sample() first");
    detail::require(layer >= 0 && layer < layers_, "layer_eviction_error: layer = ", layer,
                    " must be in [0, ", layers_, ")");
    current_[static_cast<std::size_t>(layer)] += relative_error(out_full, out_comp, size, eps_);
  }

  // Closes the sample; `keep` = false drops it (e.g. the prompt failed).
  void end_sample(bool keep = true) {
    detail::require(open_, "layer_eviction_error: end_sample() without begin_sample()");
    if (keep) samples_[dataset_].push_back(std::move(current_));
    current_.clear();
    open_ = false;
  }

  std::vector<std::string> datasets() const {
    std::vector<std::string> out;
    for (const auto& [name, s] : samples_) out.push_back(name);
    return out;
  }
  index_t samples(const std::string& dataset) const {
    auto it = samples_.find(dataset);
    return it == samples_.end() ? 0 : static_cast<index_t>(it->second.size());
  }
  // Per-layer running sums of a dataset over its kept samples (zeros for an unknown dataset).
  std::vector<double> sums(const std::string& dataset) const {
    std::vector<double> out(static_cast<std::size_t>(layers_), 0.0);
    auto it = samples_.find(dataset);
    if (it == samples_.end()) return out;
    for (const auto& s : it->second)
      for (std::size_t l = 0; l < out.size(); ++l) out[l] += s[l];
    return out;
  }

  // Per-dataset L1 normalisation, mean over datasets (name order), renormalised to sum 1.
  // Datasets whose sums are all zero are left out (see kvtrim::layer_weights).
  std::vector<double> weights() const {
    detail::require(!samples_.empty(), "layer_eviction_error: weights() with no kept samples");
    std::vector<std::vector<double>> rows;
    for (const auto& [name, s] : samples_) rows.push_back(sums(name));
    return layer_weights(rows);
  }

  // Appends `other`'s samples after this one's, per dataset (same layers and eps, no sample open).
  void merge(const layer_eviction_error& other) {
    detail::require(other.layers_ == layers_ && other.eps_ == eps_, "layer_eviction_error: merge of layers = ",
                    other.layers_, ", eps = ", other.eps_, " into layers = ", layers_, ", eps = ", eps_);
    detail::require(!open_ && !other.open_, "layer_eviction_error: merge() while a sample is open");
    for (const auto& [name, s] : other.samples_) {
      auto& mine = samples_[name];
      mine.insert(mine.end(), s.begin(), s.end());
    }
  }

  // Fills p.layer_error with weights() and records the datasets in provenance.
  void to_profile(profile& p) const {
    detail::require(p.layers == layers_, "layer_eviction_error: profile for model '", p.model, "' has layers = ",
                    p.layers, " but the errors have layers = ", layers_);
    detail::require(!open_, "layer_eviction_error: to_profile() while a sample is open");
    p.layer_error = weights();
    std::string names;
    for (const auto& [name, s] : samples_)
      names += (names.empty() ? "" : ", ") + name + " (" + std::to_string(s.size()) + " samples)";
    std::ostringstream eps;
    eps.imbue(std::locale::classic());
    eps << eps_;
    p.provenance["layer_error"] = "kvtrim layer_eviction_error, eps " + eps.str() + ": " + names;
  }

  json::value to_json() const {
    json::value v;
    v.set("kind", kind);
    v.set("version", 1);
    v.set("layers", layers_);
    v.set("eps", eps_);
    json::value ds = json::value(json::object_t{});
    for (const auto& [name, s] : samples_) {
      json::array_t a;
      for (const auto& row : s) a.push_back(detail::json_of(row));
      ds.set(name, json::value(std::move(a)));
    }
    v.set("datasets", std::move(ds));
    if (open_) {
      v.set("open_dataset", dataset_);
      v.set("open_sums", detail::json_of(current_));
    }
    return v;
  }

  static layer_eviction_error from_json(const json::value& v) {
    const std::string w = kind;
    detail::require(v.is_object(), w, ": state must be a JSON object");
    const json::value* k = v.find("kind");
    detail::require(k && k->is_string() && k->as_string() == w, w, ": state is not a ", w);
    detail::require(detail::json_int(detail::json_field(v, "version", w), w + ": version", 1, 1 << 30) == 1, w,
                    ": unsupported state version");
    const json::value& eps = detail::json_field(v, "eps", w);
    detail::require(eps.is_number(), w, ": eps must be a number");
    layer_eviction_error e(detail::json_int(detail::json_field(v, "layers", w), w + ": layers", 1, 1 << 20),
                           eps.as_number());
    const json::value& ds = detail::json_field(v, "datasets", w);
    detail::require(ds.is_object(), w, ": datasets must be an object");
    for (const auto& [name, s] : ds.as_object()) {
      detail::require(!name.empty(), w, ": empty dataset name");
      detail::require(s.is_array() && !s.as_array().empty(), w, ": datasets.", name,
                      " must be a non-empty array of per-sample sums");
      auto rows = detail::json_flat_matrix(s, w + ": datasets." + name, static_cast<int>(s.as_array().size()), e.layers_);
      auto& mine = e.samples_[name];
      for (std::size_t r = 0; r * static_cast<std::size_t>(e.layers_) < rows.size(); ++r)
        mine.emplace_back(rows.begin() + static_cast<std::ptrdiff_t>(r) * e.layers_,
                          rows.begin() + static_cast<std::ptrdiff_t>(r + 1) * e.layers_);
    }
    if (const json::value* od = v.find("open_dataset")) {
      detail::require(od->is_string() && !od->as_string().empty(), w, ": open_dataset must be a dataset name");
      e.dataset_ = od->as_string();
      e.current_ = detail::json_numbers(detail::json_field(v, "open_sums", w), w + ": open_sums");
      detail::require(e.current_.size() == static_cast<std::size_t>(e.layers_), w, ": open_sums has ",
                      e.current_.size(), " entries, expected ", e.layers_);
      for (double x : e.current_)
        detail::require(std::isfinite(x) && x >= 0.0, w, ": open_sums holds ", x, "; values must be finite and >= 0");
      e.open_ = true;
    }
    return e;
  }

  static constexpr const char* kind = "layer_eviction_error";

 private:
  int layers_;
  double eps_;
  std::map<std::string, std::vector<std::vector<double>>> samples_;  // dataset → per-sample [layer] sums
  bool open_ = false;
  std::string dataset_;
  std::vector<double> current_;
};

}  // namespace kvtrim
