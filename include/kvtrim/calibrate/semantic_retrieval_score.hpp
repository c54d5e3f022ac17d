#pragma once
// CompressKV's semantic-retrieval head score, fed by a host that decodes probe prompts (needle in
// a haystack; the answer span is the needle's tokens in the prompt). No model inside.
//
// Definition (CompressKV Retrieval_Head_Identification/semantic_retrieval_head_detection.py,
// retrieval_calculate): at a decode step that generates token g, for EACH position i of the span
// whose prompt token equals g, every query head's attention mass over the WHOLE span (the sum of
// the last query's attention weights at span positions) is added to that head's trial score. So a
// token that occurs k times in the span adds the mass k times; a token not in the span adds
// nothing. A trial's score is kept or discarded by the host's success test (CompressKV keeps
// trials whose answer has ROUGE-1 recall > 50); a head's score is the mean over kept trials.
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "kvtrim/calibrate/head_trials.hpp"

namespace kvtrim {

class semantic_retrieval_score {
 public:
  semantic_retrieval_score(int layers, int q_heads)
      : trials_(layers, q_heads, "semantic_retrieval_score"),
        staged_(static_cast<std::size_t>(layers) * static_cast<std::size_t>(q_heads), 0.0),
        staged_layer_(static_cast<std::size_t>(layers), 0),
        masses_(static_cast<std::size_t>(q_heads), 0.0) {}

  int layers() const { return trials_.layers(); }
  int q_heads() const { return trials_.q_heads(); }
  bool trial_open() const { return trials_.open(); }
  index_t kept_trials() const { return trials_.kept(); }
  index_t discarded_trials() const { return trials_.discarded(); }

  // Opens a trial whose answer span is prompt positions [span_begin, span_begin + span.size())
  // holding the token ids `span_tokens`.
  void begin_trial(std::vector<std::int32_t> span_tokens, index_t span_begin) {
    detail::require(!span_tokens.empty(), "semantic_retrieval_score: empty answer span");
    detail::require(span_begin >= 0, "semantic_retrieval_score: span_begin = ", span_begin, " must be >= 0");
    trials_.begin();
    span_ = std::move(span_tokens);
    span_begin_ = span_begin;
  }

  // One layer at a decode step whose generated token is already known. `attn` holds q_heads
  // rows (the last query's attention over n_keys keys), `row_stride` elements apart (0 = n_keys).
  void on_step(int layer, const float* attn, index_t n_keys, std::int32_t generated_token,
               index_t row_stride = 0) {
    check(layer, attn, n_keys, row_stride, "on_step");
    const index_t k = occurrences(generated_token);
    if (k == 0) return;
    // All masses first: a bad row is rejected before any score changes.
    for (int h = 0; h < q_heads(); ++h) masses_[static_cast<std::size_t>(h)] = mass(attn, row_stride, h);
    for (int h = 0; h < q_heads(); ++h)
      for (index_t r = 0; r < k; ++r) trials_.sum(layer, h) += masses_[static_cast<std::size_t>(h)];
  }

  // Two-phase form for hosts that learn the token only after the whole forward pass: observe()
  // each layer's rows as they are computed (only q_heads masses are kept), then end_step() with
  // the generated token. Gives exactly what on_step() with that token gives.
  void observe(int layer, const float* attn, index_t n_keys, index_t row_stride = 0) {
    check(layer, attn, n_keys, row_stride, "observe");
    detail::require(!staged_layer_[static_cast<std::size_t>(layer)], "semantic_retrieval_score: layer ",
                    layer, " observed twice in one step; call end_step() between steps");
    for (int h = 0; h < q_heads(); ++h) masses_[static_cast<std::size_t>(h)] = mass(attn, row_stride, h);
    for (int h = 0; h < q_heads(); ++h) staged(layer, h) = masses_[static_cast<std::size_t>(h)];
    staged_layer_[static_cast<std::size_t>(layer)] = 1;
  }
  void end_step(std::int32_t generated_token) {
    trials_.require_open("end_step");
    const index_t k = occurrences(generated_token);
    for (int l = 0; l < layers(); ++l) {
      if (!staged_layer_[static_cast<std::size_t>(l)]) continue;
      for (int h = 0; h < q_heads(); ++h)
        for (index_t r = 0; r < k; ++r) trials_.sum(l, h) += staged(l, h);
      staged_layer_[static_cast<std::size_t>(l)] = 0;
    }
  }

  // Closes the trial; `keep` = the host's success test passed.
  void end_trial(bool keep) {
    trials_.require_open("end_trial");
    for (char s : staged_layer_)
      detail::require(!s, "semantic_retrieval_score: end_trial() with observed layers not committed; "
                          "call end_step() first");
    trials_.end(keep);
    span_.clear();
  }

  // [layer][q_head] mean over kept trials (0 when none); an open trial is not included.
  std::vector<std::vector<double>> scores() const { return trials_.mean(); }

  // Appends `other`'s kept trials after this one's (same shape, no trial open in either).
  void merge(const semantic_retrieval_score& other) { trials_.merge(other.trials_); }

  // Fills p.semantic_retrieval (shape must match, at least one kept trial) and its provenance.
  void to_profile(profile& p) const { trials_.fill_profile(p.semantic_retrieval, p, "semantic_retrieval"); }

  // {"<layer>-<head>": [kept trial scores]}: CompressKV's head_score/<model>_SRH.json layout.
  json::value to_head_score_json() const { return trials_.head_score_json(); }

  // Complete state, open trial included, for resume files (restore with from_json).
  json::value to_json() const {
    json::value v;
    trials_.write(v, kind);
    if (trial_open()) {
      json::array_t toks;
      for (std::int32_t t : span_) toks.emplace_back(t);
      v.set("span_tokens", json::value(std::move(toks)));
      v.set("span_begin", span_begin_);
      v.set("staged", detail::json_of_flat(staged_, layers(), q_heads()));
      json::array_t flags;
      for (char s : staged_layer_) flags.emplace_back(s != 0);
      v.set("staged_layers", json::value(std::move(flags)));
    }
    return v;
  }

  static semantic_retrieval_score from_json(const json::value& v) {
    detail::head_trials t = detail::head_trials::read(v, kind);
    semantic_retrieval_score s(t.layers(), t.q_heads());
    s.trials_ = std::move(t);
    if (s.trial_open()) {
      const std::string w = kind;
      const json::value& toks = detail::json_field(v, "span_tokens", w);
      detail::require(toks.is_array() && !toks.as_array().empty(), w, ": span_tokens must be a non-empty array");
      for (std::size_t i = 0; i < toks.as_array().size(); ++i)
        s.span_.push_back(static_cast<std::int32_t>(detail::json_i64(
            toks.as_array()[i], w + ": span_tokens[" + std::to_string(i) + "]", std::numeric_limits<std::int32_t>::min(), std::numeric_limits<std::int32_t>::max())));
      s.span_begin_ = detail::json_i64(detail::json_field(v, "span_begin", w), w + ": span_begin", 0,
                                       std::int64_t(1) << 52);
      s.staged_ = detail::json_flat_matrix(detail::json_field(v, "staged", w), w + ": staged", s.layers(),
                                           s.q_heads());
      const json::value& flags = detail::json_field(v, "staged_layers", w);
      detail::require(flags.is_array() && flags.as_array().size() == static_cast<std::size_t>(s.layers()), w,
                      ": staged_layers must be an array of ", s.layers(), " booleans");
      for (std::size_t l = 0; l < flags.as_array().size(); ++l) {
        detail::require(flags.as_array()[l].is_bool(), w, ": staged_layers[", l, "] must be a boolean");
        s.staged_layer_[l] = flags.as_array()[l].as_bool() ? 1 : 0;
      }
    }
    return s;
  }

  static constexpr const char* kind = "semantic_retrieval_score";

 private:
  void check(int layer, const float* attn, index_t n_keys, index_t& row_stride, const char* call) const {
    trials_.require_open(call);
    trials_.check_layer(layer);
    if (row_stride == 0) row_stride = n_keys;
    detail::check_attention_rows(kind, attn, n_keys, row_stride);
    const index_t span_end = span_begin_ + static_cast<index_t>(span_.size());
    detail::require(span_end <= n_keys, "semantic_retrieval_score: answer span [", span_begin_, ", ",
                    span_end, ") lies beyond n_keys = ", n_keys);
  }
  index_t occurrences(std::int32_t token) const {
    index_t k = 0;
    for (std::int32_t t : span_) k += t == token;
    return k;
  }
  // Attention mass of head h over the whole span, summed in position order in double.
  double mass(const float* attn, index_t stride, int h) const {
    const float* row = attn + static_cast<index_t>(h) * stride;
    double m = 0.0;
    for (std::size_t i = 0; i < span_.size(); ++i) m += static_cast<double>(row[span_begin_ + static_cast<index_t>(i)]);
    detail::require(std::isfinite(m) && m >= 0.0, "semantic_retrieval_score: head ", h,
                    " has attention mass ", m, " over the span; attention weights must be finite and >= 0");
    return m;
  }
  double& staged(int l, int h) {
    return staged_[static_cast<std::size_t>(l) * static_cast<std::size_t>(q_heads()) + static_cast<std::size_t>(h)];
  }

  detail::head_trials trials_;
  std::vector<std::int32_t> span_;
  index_t span_begin_ = 0;
  std::vector<double> staged_;     // [layer][q_head] masses observed this step
  std::vector<char> staged_layer_;  // layers observed this step
  std::vector<double> masses_;      // scratch: this call's per-head masses
};

}  // namespace kvtrim
