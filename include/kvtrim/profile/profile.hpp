#pragma once
// A model's offline artefacts in one JSON file (docs/PROFILE.md): per-head semantic-retrieval
// scores (CompressKV's head selector), per-head retrieval-reasoning scores (HeadKV's budgets),
// per-layer eviction-error weights (CompressKV's allocator), and provenance.
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "kvtrim/core/error.hpp"
#include "kvtrim/core/shape.hpp"
#include "kvtrim/profile/file.hpp"
#include "kvtrim/profile/json.hpp"

namespace kvtrim {

struct profile {
  // Written as "version"; a reader rejects files newer than the version it knows.
  static constexpr int format_version = 1;

  std::string model;         // free text, e.g. "SmolLM2-135M-Instruct"
  std::string model_sha256;  // empty or 64 hex digits: hash of the weights the scores came from
  int layers = 0;
  int q_heads = 0;
  int kv_heads = 0;
  std::vector<std::vector<double>> semantic_retrieval;   // [layer][q_head], may be empty
  std::vector<std::vector<double>> retrieval_reasoning;  // [layer][q_head], may be empty
  std::vector<double> layer_error;                       // [layer] weights, may be empty
  std::map<std::string, std::string> provenance;         // e.g. data, date, tool, source files

  bool has_semantic_retrieval() const { return !semantic_retrieval.empty(); }
  bool has_retrieval_reasoning() const { return !retrieval_reasoning.empty(); }
  bool has_layer_error() const { return !layer_error.empty(); }

  // Shape, sizes and values: head scores finite and >= 0, layer weights finite, >= 0 and not
  // all zero, hash empty or 64 hex digits.
  void validate() const;

  // Rejects a profile made for another model (layer or head counts differ).
  void check_matches(const model_shape& shape) const {
    detail::require(layers == shape.layers && q_heads == shape.q_heads && kv_heads == shape.kv_heads,
                    "profile for model '", model, "' has layers = ", layers, ", q_heads = ", q_heads,
                    ", kv_heads = ", kv_heads, " but the model has layers = ", shape.layers,
                    ", q_heads = ", shape.q_heads, ", kv_heads = ", shape.kv_heads);
  }
};

namespace detail {

inline void check_head_matrix(const std::vector<std::vector<double>>& m, const char* name, int layers,
                              int q_heads) {
  if (m.empty()) return;
  require(m.size() == static_cast<std::size_t>(layers), "profile: ", name, " has ", m.size(),
          " layers, expected ", layers);
  for (std::size_t l = 0; l < m.size(); ++l) {
    require(m[l].size() == static_cast<std::size_t>(q_heads), "profile: ", name, "[", l, "] has ",
            m[l].size(), " heads, expected q_heads = ", q_heads);
    for (std::size_t h = 0; h < m[l].size(); ++h)
      require(std::isfinite(m[l][h]) && m[l][h] >= 0.0, "profile: ", name, "[", l, "][", h,
              "] = ", m[l][h], " must be finite and >= 0");
  }
}

// An error message without its "kvtrim: " prefix, for re-throwing with more context.
inline std::string strip_prefix(const std::string& what) {
  return what.rfind("kvtrim: ", 0) == 0 ? what.substr(8) : what;
}

inline bool is_sha256_hex(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) return false;
  return true;
}

// Typed field readers with messages naming the field.
inline const json::value& json_field(const json::value& obj, const char* key, const std::string& where) {
  const json::value* v = obj.find(key);
  require(v != nullptr, where, ": missing \"", key, "\"");
  return *v;
}

inline int json_int(const json::value& v, const std::string& what, int lo, int hi) {
  require(v.is_number(), what, " must be a number, got ", json::type_name(v.kind()));
  const double d = v.as_number();
  require(d == std::floor(d) && d >= lo && d <= hi, what, " = ", d, " must be an integer in [", lo,
          ", ", hi, "]");
  return static_cast<int>(d);
}

inline std::vector<double> json_numbers(const json::value& v, const std::string& what) {
  require(v.is_array(), what, " must be an array of numbers, got ", json::type_name(v.kind()));
  std::vector<double> out;
  out.reserve(v.as_array().size());
  for (std::size_t i = 0; i < v.as_array().size(); ++i) {
    const json::value& x = v.as_array()[i];
    require(x.is_number(), what, "[", i, "] must be a number, got ", json::type_name(x.kind()));
    out.push_back(x.as_number());
  }
  return out;
}

inline std::vector<std::vector<double>> json_matrix(const json::value& v, const std::string& what) {
  require(v.is_array(), what, " must be an array of arrays, got ", json::type_name(v.kind()));
  std::vector<std::vector<double>> out;
  for (std::size_t i = 0; i < v.as_array().size(); ++i)
    out.push_back(json_numbers(v.as_array()[i], what + "[" + std::to_string(i) + "]"));
  return out;
}

inline json::value json_of(const std::vector<double>& xs) {
  json::array_t a;
  a.reserve(xs.size());
  for (double x : xs) a.emplace_back(x);
  return json::value(std::move(a));
}

inline json::value json_of(const std::vector<std::vector<double>>& m) {
  json::array_t a;
  a.reserve(m.size());
  for (const auto& row : m) a.push_back(json_of(row));
  return json::value(std::move(a));
}

}  // namespace detail

inline void profile::validate() const {
  detail::require(layers > 0, "profile: layers = ", layers, " must be > 0");
  detail::require(kv_heads > 0, "profile: kv_heads = ", kv_heads, " must be > 0");
  detail::require(q_heads > 0 && q_heads % kv_heads == 0, "profile: q_heads = ", q_heads,
                  " must be a positive multiple of kv_heads = ", kv_heads);
  detail::require(detail::shape_product_ok(layers, q_heads), "profile: layers x q_heads = ", layers, " x ",
                  q_heads, " exceeds ", max_shape_heads, " heads");
  detail::require(model_sha256.empty() || detail::is_sha256_hex(model_sha256),
                  "profile: model_sha256 = '", model_sha256, "' must be empty or 64 hex digits");
  detail::check_head_matrix(semantic_retrieval, "semantic_retrieval", layers, q_heads);
  detail::check_head_matrix(retrieval_reasoning, "retrieval_reasoning", layers, q_heads);
  if (!layer_error.empty()) {
    detail::require(layer_error.size() == static_cast<std::size_t>(layers), "profile: layer_error has ",
                    layer_error.size(), " entries, expected layers = ", layers);
    double sum = 0.0;
    for (std::size_t l = 0; l < layer_error.size(); ++l) {
      detail::require(std::isfinite(layer_error[l]) && layer_error[l] >= 0.0, "profile: layer_error[",
                      l, "] = ", layer_error[l], " must be finite and >= 0");
      sum += layer_error[l];
    }
    detail::require(sum > 0.0, "profile: layer_error is all zero; it must have a positive sum");
    // Each weight finite, their sum not: every budget computed from them would be NaN.
    detail::require(std::isfinite(sum), "profile: layer_error sums to infinity; the weights must have a finite sum");
  }
}

// CompressKV's layer weights from per-dataset error totals (rows of `layers` values each): each
// row L1-normalised, the mean over rows, renormalised to sum 1. A row that sums to 0 carries no
// information about which layers matter and is left out; all rows zero is an error.
inline std::vector<double> layer_weights(const std::vector<std::vector<double>>& rows) {
  detail::require(!rows.empty(), "layer_weights: no dataset rows");
  const std::size_t layers = rows[0].size();
  detail::require(layers > 0, "layer_weights: empty rows");
  std::vector<double> mean(layers, 0.0);
  std::size_t used = 0;
  for (std::size_t r = 0; r < rows.size(); ++r) {
    detail::require(rows[r].size() == layers, "layer_weights: row ", r, " has ", rows[r].size(),
                    " layers, expected ", layers);
    double sum = 0.0;
    for (std::size_t l = 0; l < layers; ++l) {
      detail::require(std::isfinite(rows[r][l]) && rows[r][l] >= 0.0, "layer_weights: row ", r, "[",
                      l, "] = ", rows[r][l], " must be finite and >= 0");
      sum += rows[r][l];
    }
    if (sum == 0.0) continue;
    for (std::size_t l = 0; l < layers; ++l) mean[l] += rows[r][l] / sum;
    ++used;
  }
  detail::require(used > 0, "layer_weights: every row sums to 0 (no eviction error was measured)");
  double total = 0.0;
  for (double& m : mean) total += (m /= static_cast<double>(used));
  for (double& m : mean) m /= total;
  return mean;
}

// The profile as a JSON value (format: docs/PROFILE.md). Validates first.
inline json::value to_json(const profile& p) {
  p.validate();
  json::value v;
  v.set("format", "kvtrim-profile");
  v.set("version", profile::format_version);
  v.set("model", p.model);
  v.set("model_sha256", p.model_sha256);
  json::value shape;
  shape.set("layers", p.layers);
  shape.set("q_heads", p.q_heads);
  shape.set("kv_heads", p.kv_heads);
  v.set("shape", std::move(shape));
  if (p.has_semantic_retrieval()) v.set("semantic_retrieval", detail::json_of(p.semantic_retrieval));
  if (p.has_retrieval_reasoning()) v.set("retrieval_reasoning", detail::json_of(p.retrieval_reasoning));
  if (p.has_layer_error()) v.set("layer_error", detail::json_of(p.layer_error));
  json::value prov = json::value(json::object_t{});
  for (const auto& [k, s] : p.provenance) prov.set(k, s);
  v.set("provenance", std::move(prov));
  return v;
}

// A profile from its JSON value; `source` names the file in errors. Unknown keys are rejected
// (a misspelt field must not silently drop scores); the result is validated.
inline profile profile_from_json(const json::value& v, const std::string& source = "profile") {
  detail::require(v.is_object(), source, ": a profile must be a JSON object, got ",
                  json::type_name(v.kind()));
  static const char* const known[] = {"format",  "version", "model",      "model_sha256",
                                      "shape",   "semantic_retrieval", "retrieval_reasoning",
                                      "layer_error", "provenance"};
  for (const auto& [key, ignored] : v.as_object()) {
    bool ok = false;
    for (const char* k : known) ok = ok || key == k;
    detail::require(ok, source, ": unknown profile field \"", key, "\"");
  }
  const json::value& format = detail::json_field(v, "format", source);
  detail::require(format.is_string() && format.as_string() == "kvtrim-profile", source,
                  ": \"format\" must be \"kvtrim-profile\"");
  const int version = detail::json_int(detail::json_field(v, "version", source), source + ": version",
                                       1, 1 << 30);
  detail::require(version <= profile::format_version, source, ": profile format version ", version,
                  " is newer than this kvtrim reads (", profile::format_version, ")");
  profile p;
  const json::value& model = detail::json_field(v, "model", source);
  detail::require(model.is_string(), source, ": \"model\" must be a string");
  p.model = model.as_string();
  if (const json::value* h = v.find("model_sha256")) {
    detail::require(h->is_string(), source, ": \"model_sha256\" must be a string");
    p.model_sha256 = h->as_string();
  }
  const json::value& shape = detail::json_field(v, "shape", source);
  detail::require(shape.is_object(), source, ": \"shape\" must be an object");
  for (const auto& [key, ignored] : shape.as_object())
    detail::require(key == "layers" || key == "q_heads" || key == "kv_heads", source,
                    ": unknown shape field \"", key, "\"");
  p.layers = detail::json_int(detail::json_field(shape, "layers", source + ": shape"),
                              source + ": shape.layers", 1, 1 << 20);
  p.q_heads = detail::json_int(detail::json_field(shape, "q_heads", source + ": shape"),
                               source + ": shape.q_heads", 1, 1 << 20);
  p.kv_heads = detail::json_int(detail::json_field(shape, "kv_heads", source + ": shape"),
                                source + ": shape.kv_heads", 1, 1 << 20);
  // The head tables are layers x q_heads: their product is bounded before any is read.
  detail::require(detail::shape_product_ok(p.layers, p.q_heads), source, ": shape layers x q_heads = ", p.layers,
                  " x ", p.q_heads, " exceeds ", max_shape_heads, " heads");
  if (const json::value* m = v.find("semantic_retrieval"))
    p.semantic_retrieval = detail::json_matrix(*m, source + ": semantic_retrieval");
  if (const json::value* m = v.find("retrieval_reasoning"))
    p.retrieval_reasoning = detail::json_matrix(*m, source + ": retrieval_reasoning");
  if (const json::value* e = v.find("layer_error"))
    p.layer_error = detail::json_numbers(*e, source + ": layer_error");
  if (const json::value* prov = v.find("provenance")) {
    detail::require(prov->is_object(), source, ": \"provenance\" must be an object of strings");
    for (const auto& [key, s] : prov->as_object()) {
      detail::require(s.is_string(), source, ": provenance \"", key, "\" must be a string");
      p.provenance[key] = s.as_string();
    }
  }
  try {
    p.validate();
  } catch (const error& e) {
    detail::fail(source, ": ", detail::strip_prefix(e.what()));
  }
  return p;
}

inline profile load_profile(const std::string& path) {
  return profile_from_json(json::parse(read_text_file(path), path), path);
}

// Validates, then writes the whole file or nothing (temp file + fsync + rename).
inline void save_profile(const profile& p, const std::string& path) {
  std::string text;
  try {
    text = json::dump(to_json(p), 2) + "\n";
  } catch (const error& e) {
    detail::fail("not writing ", path, ": ", detail::strip_prefix(e.what()));
  }
  write_text_file_atomic(path, text);
}

}  // namespace kvtrim
