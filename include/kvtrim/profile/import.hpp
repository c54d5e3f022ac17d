#pragma once
// Import of the published per-model artefacts (formats confirmed against the upstream code;
// docs/PROFILE.md):
//   CompressKV  <model>_head_idx.json      {"<layer>": [query-head ids, best first], ...}
//   CompressKV  <model>_layer_score.jsonl  {"<dataset>": [L floats], ..., "avg_score": [L floats]}
//   HeadKV      <model>_retrieval_reasoning_heads.json  {"<layer>-<head>": [per-trial scores]}
// (CompressKV's head_score/<model>_SRH.json has the HeadKV layout too.) Every id and size is
// checked against the given layer / head counts, so a file for another model is rejected.
#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "kvtrim/core/error.hpp"
#include "kvtrim/profile/file.hpp"
#include "kvtrim/profile/json.hpp"
#include "kvtrim/profile/profile.hpp"

namespace kvtrim {

namespace detail {

// A strict non-negative decimal id ("0", "17"; no sign, no leading zeros) below `limit`, or -1.
inline long parse_id(std::string_view s, long limit) {
  if (s.empty() || s.size() > 9 || (s.size() > 1 && s[0] == '0')) return -1;
  long v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return -1;
    v = v * 10 + (c - '0');
  }
  return v < limit ? v : -1;
}

inline void check_counts(int layers, int q_heads, const char* what) {
  require(layers > 0, what, ": layers = ", layers, " must be > 0");
  require(q_heads > 0, what, ": q_heads = ", q_heads, " must be > 0");
  // The score tables are layers x q_heads: bounded before they are allocated.
  require(shape_product_ok(layers, q_heads), what, ": layers x q_heads = ", layers, " x ", q_heads, " exceeds ",
          max_shape_heads, " heads");
}

}  // namespace detail

// CompressKV's semantic-retrieval-head order → scores that reproduce it: the head at rank r
// (0 = best) of a layer scores q_heads − r; heads a layer's list leaves out score 0 (below every
// listed one). Every layer 0..layers−1 must be present; ids must be integers in [0, q_heads),
// unique within a layer.
inline std::vector<std::vector<double>> parse_compresskv_head_idx(std::string_view text, int layers,
                                                                   int q_heads,
                                                                   const std::string& source = "head_idx") {
  detail::check_counts(layers, q_heads, "compresskv head_idx");
  const json::value v = json::parse(text, source);
  detail::require(v.is_object(), source, ": expected an object {\"<layer>\": [head ids]}, got ",
                  json::type_name(v.kind()));
  // The file is checked against the shape before the score table is allocated: every key a
  // layer id in range (so at most `layers` of them).
  for (const auto& [key, list] : v.as_object())
    detail::require(detail::parse_id(key, layers) >= 0, source, ": layer key \"", key,
                    "\" must be a layer id in [0, ", layers, ")");
  std::vector<std::vector<double>> scores(static_cast<std::size_t>(layers),
                                          std::vector<double>(static_cast<std::size_t>(q_heads), 0.0));
  std::vector<char> seen_layer(static_cast<std::size_t>(layers), 0);
  for (const auto& [key, list] : v.as_object()) {
    const long l = detail::parse_id(key, layers);
    detail::require(l >= 0, source, ": layer key \"", key, "\" must be a layer id in [0, ", layers, ")");
    detail::require(list.is_array() && !list.as_array().empty() &&
                        list.as_array().size() <= static_cast<std::size_t>(q_heads),
                    source, ": layer \"", key, "\" must map to 1..", q_heads, " head ids");
    seen_layer[static_cast<std::size_t>(l)] = 1;
    const auto& ids = list.as_array();
    std::vector<char> seen_head(static_cast<std::size_t>(q_heads), 0);
    for (std::size_t r = 0; r < ids.size(); ++r) {
      const double d = ids[r].is_number() ? ids[r].as_number() : -1.0;
      detail::require(d == std::floor(d) && d >= 0 && d < q_heads, source, ": layer \"", key, "\" rank ",
                      r, ": head id ", json::dump(ids[r]), " must be an integer in [0, ", q_heads, ")");
      const auto h = static_cast<std::size_t>(d);
      detail::require(!seen_head[h], source, ": layer \"", key, "\" lists head ", h, " twice");
      seen_head[h] = 1;
      scores[static_cast<std::size_t>(l)][h] = static_cast<double>(q_heads) - static_cast<double>(r);
    }
  }
  for (int l = 0; l < layers; ++l)
    detail::require(seen_layer[static_cast<std::size_t>(l)], source, ": layer \"", l,
                    "\" is missing (the file must list layers 0..", layers - 1, ")");
  return scores;
}

inline std::vector<std::vector<double>> read_compresskv_head_idx(const std::string& path, int layers,
                                                                  int q_heads) {
  return parse_compresskv_head_idx(read_text_file(path), layers, q_heads, path);
}

// HeadKV's (and CompressKV's *_SRH.json) per-head trial lists → scores[l][h] = mean of the
// trials, 0 for a head with no trials or absent from the file. Keys "<layer>-<head>" must be in
// range; trial scores finite and >= 0.
inline std::vector<std::vector<double>> parse_head_trial_scores(std::string_view text, int layers,
                                                                 int q_heads,
                                                                 const std::string& source = "head scores") {
  detail::check_counts(layers, q_heads, "head trial scores");
  const json::value v = json::parse(text, source);
  detail::require(v.is_object(), source, ": expected an object {\"<layer>-<head>\": [scores]}, got ",
                  json::type_name(v.kind()));
  detail::require(!v.as_object().empty(), source, ": no heads in the file");
  std::vector<std::vector<double>> scores(static_cast<std::size_t>(layers),
                                          std::vector<double>(static_cast<std::size_t>(q_heads), 0.0));
  for (const auto& [key, trials] : v.as_object()) {
    const auto dash = key.find('-');
    const long l = dash == std::string::npos ? -1 : detail::parse_id(std::string_view(key).substr(0, dash), layers);
    const long h = dash == std::string::npos ? -1 : detail::parse_id(std::string_view(key).substr(dash + 1), q_heads);
    detail::require(l >= 0 && h >= 0, source, ": key \"", key, "\" must be \"<layer>-<head>\" with layer in [0, ",
                    layers, ") and head in [0, ", q_heads, ")");
    detail::require(trials.is_array(), source, ": \"", key, "\" must map to an array of trial scores");
    double sum = 0.0;
    for (std::size_t t = 0; t < trials.as_array().size(); ++t) {
      const json::value& x = trials.as_array()[t];
      detail::require(x.is_number() && x.as_number() >= 0.0, source, ": \"", key, "\" trial ", t,
                      ": ", json::dump(x), " must be a number >= 0");
      sum += x.as_number();
    }
    const auto n = trials.as_array().size();
    scores[static_cast<std::size_t>(l)][static_cast<std::size_t>(h)] = n ? sum / static_cast<double>(n) : 0.0;
  }
  return scores;
}

inline std::vector<std::vector<double>> read_headkv_scores(const std::string& path, int layers, int q_heads) {
  return parse_head_trial_scores(read_text_file(path), layers, q_heads, path);
}

// CompressKV's layer eviction-error weights. The file is read as a sequence of JSON objects (the
// published file is one pretty-printed object spanning many lines; the generator's raw output is
// one {"<dataset>": [...]} object per line). The weights are `avg_score` of the LAST object that
// has one. If none has (raw generator output), they are computed as CompressKV's avg_score was:
// each dataset's row L1-normalised, the mean over datasets, renormalised to sum 1 (a dataset seen
// twice: the later line wins). Every array member must have `layers` entries; `how`, if given,
// receives which rule applied.
inline std::vector<double> parse_compresskv_layer_score(std::string_view text, int layers,
                                                        const std::string& source = "layer_score",
                                                        std::string* how = nullptr) {
  detail::require(layers > 0, "compresskv layer_score: layers = ", layers, " must be > 0");
  const std::vector<json::value> values = json::parse_sequence(text, source);
  detail::require(!values.empty(), source, ": no JSON object in the file");
  auto row = [&](const json::value& arr, std::size_t index, const std::string& key) {
    const std::string what = source + ": object " + std::to_string(index + 1) + " \"" + key + "\"";
    std::vector<double> r = detail::json_numbers(arr, what);
    detail::require(r.size() == static_cast<std::size_t>(layers), what, " has ", r.size(),
                    " layers, expected ", layers);
    for (std::size_t l = 0; l < r.size(); ++l)
      detail::require(std::isfinite(r[l]) && r[l] >= 0.0, what, "[", l, "] = ", r[l], " must be >= 0");
    return r;
  };
  std::map<std::string, std::vector<double>> datasets;
  std::vector<double> avg;
  for (std::size_t i = 0; i < values.size(); ++i) {
    detail::require(values[i].is_object(), source, ": value ", i + 1, " must be an object, got ",
                    json::type_name(values[i].kind()));
    for (const auto& [key, arr] : values[i].as_object()) {
      if (key == "avg_score") avg = row(arr, i, key);
      else datasets[key] = row(arr, i, key);
    }
  }
  if (!avg.empty()) {
    double sum = 0.0;
    for (double x : avg) sum += x;
    detail::require(sum > 0.0, source, ": avg_score is all zero");
    detail::require(std::isfinite(sum), source, ": avg_score sums to infinity");
    if (how) *how = "avg_score";
    return avg;
  }
  detail::require(!datasets.empty(), source, ": no avg_score and no dataset rows");
  std::vector<std::vector<double>> rows;
  for (auto& [name, r] : datasets) rows.push_back(std::move(r));
  if (how) *how = "mean of " + std::to_string(rows.size()) + " dataset rows (no avg_score)";
  return layer_weights(rows);
}

inline std::vector<double> read_compresskv_layer_score(const std::string& path, int layers,
                                                       std::string* how = nullptr) {
  return parse_compresskv_layer_score(read_text_file(path), layers, path, how);
}

// Paths of the published artefacts to combine into one profile (empty = not given).
struct import_sources {
  std::string compresskv_head_idx;     // → semantic_retrieval
  std::string compresskv_layer_score;  // → layer_error
  std::string headkv_scores;           // → retrieval_reasoning
};

// One profile from the published artefacts, with the source files recorded in provenance.
inline profile import_profile(const import_sources& src, int layers, int q_heads, int kv_heads,
                              const std::string& model = "") {
  profile p;
  p.model = model;
  p.layers = layers;
  p.q_heads = q_heads;
  p.kv_heads = kv_heads;
  p.validate();  // shape first, before any file is read
  detail::require(!src.compresskv_head_idx.empty() || !src.compresskv_layer_score.empty() ||
                      !src.headkv_scores.empty(),
                  "import_profile: no source file given");
  if (!src.compresskv_head_idx.empty()) {
    p.semantic_retrieval = read_compresskv_head_idx(src.compresskv_head_idx, layers, q_heads);
    p.provenance["semantic_retrieval"] =
        "CompressKV head_idx " + src.compresskv_head_idx + " (score = q_heads - rank)";
  }
  if (!src.compresskv_layer_score.empty()) {
    std::string how;
    p.layer_error = read_compresskv_layer_score(src.compresskv_layer_score, layers, &how);
    p.provenance["layer_error"] = "CompressKV layer_score " + src.compresskv_layer_score + " (" + how + ")";
  }
  if (!src.headkv_scores.empty()) {
    p.retrieval_reasoning = read_headkv_scores(src.headkv_scores, layers, q_heads);
    p.provenance["retrieval_reasoning"] = "HeadKV scores " + src.headkv_scores + " (mean of trials)";
  }
  p.validate();
  return p;
}

}  // namespace kvtrim
