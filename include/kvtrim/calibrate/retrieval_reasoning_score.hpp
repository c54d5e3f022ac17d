#pragma once
// HeadKV's retrieval-reasoning (R2) head score, fed by a host that decodes probe prompts. No model
// inside.
//
// Definition (HeadKV retrieval_head_detection_r2.py, retrieval_calculate): with N = span length,
// at every decode step each query head's top-N attended key positions (the last query's row over
// all n_keys keys) are taken, and for each of them that falls inside the answer span [begin, end)
// the weight a_i / N is added to the head's trial score. Unlike the semantic score there is no
// token test: every step counts. Upstream multiplies by 10 / answer_tokens as well
// (10·a_i / (N·answer_tokens)); pass scale = 10.0 / answer_tokens to begin_trial() to reproduce
// its numbers up to rounding (the default 1 gives a_i / N). Ties at the top-N boundary go to the lower
// position (torch.topk leaves them unspecified); contributions are added in position order.
// A head's score is the mean over kept trials (HeadKV keeps trials with answer F1 > 50).
#include <algorithm>
#include <cmath>
#include <vector>

#include "kvtrim/calibrate/head_trials.hpp"

namespace kvtrim {

class retrieval_reasoning_score {
 public:
  retrieval_reasoning_score(int layers, int q_heads) : trials_(layers, q_heads, kind) {}

  int layers() const { return trials_.layers(); }
  int q_heads() const { return trials_.q_heads(); }
  bool trial_open() const { return trials_.open(); }
  index_t kept_trials() const { return trials_.kept(); }
  index_t discarded_trials() const { return trials_.discarded(); }

  // Opens a trial whose answer span is prompt positions [span_begin, span_end).
  void begin_trial(index_t span_begin, index_t span_end, double scale = 1.0) {
    detail::require(span_begin >= 0 && span_end > span_begin, "retrieval_reasoning_score: answer span [",
                    span_begin, ", ", span_end, ") must be non-empty with span_begin >= 0");
    detail::require(std::isfinite(scale) && scale > 0.0, "retrieval_reasoning_score: scale = ", scale,
                    " must be finite and > 0");
    trials_.begin();
    begin_ = span_begin;
    end_ = span_end;
    scale_ = scale;
  }

  // One layer at one decode step: q_heads rows of the last query's attention over n_keys keys,
  // `row_stride` elements apart (0 = n_keys). n_keys must cover the span.
  void on_step(int layer, const float* attn, index_t n_keys, index_t row_stride = 0) {
    trials_.require_open("on_step");
    trials_.check_layer(layer);
    if (row_stride == 0) row_stride = n_keys;
    detail::check_attention_rows(kind, attn, n_keys, row_stride);
    detail::require(end_ <= n_keys, "retrieval_reasoning_score: answer span [", begin_, ", ", end_,
                    ") lies beyond n_keys = ", n_keys);
    const index_t n_top = end_ - begin_;
    // Every row is checked before any score changes.
    for (int h = 0; h < q_heads(); ++h) {
      const float* row = attn + static_cast<index_t>(h) * row_stride;
      for (index_t i = 0; i < n_keys; ++i)
        detail::require(std::isfinite(row[i]), "retrieval_reasoning_score: head ", h, " attention[", i,
                        "] = ", row[i], " is not finite");
    }
    order_.resize(static_cast<std::size_t>(n_keys));
    for (int h = 0; h < q_heads(); ++h) {
      const float* row = attn + static_cast<index_t>(h) * row_stride;
      // Rank by (weight descending, position ascending); the N-th ranked key is the threshold.
      auto before = [row](index_t a, index_t b) { return row[a] > row[b] || (row[a] == row[b] && a < b); };
      for (index_t i = 0; i < n_keys; ++i) order_[static_cast<std::size_t>(i)] = i;
      std::nth_element(order_.begin(), order_.begin() + (n_top - 1), order_.end(), before);
      const index_t last = order_[static_cast<std::size_t>(n_top - 1)];
      double add = 0.0;
      for (index_t i = begin_; i < end_; ++i)
        if (i == last || before(i, last)) add += scale_ * static_cast<double>(row[i]) / static_cast<double>(n_top);
      trials_.sum(layer, h) += add;
    }
  }

  // Closes the trial; `keep` = the host's success test passed.
  void end_trial(bool keep) { trials_.end(keep); }

  // [layer][q_head] mean over kept trials (0 when none); an open trial is not included.
  std::vector<std::vector<double>> scores() const { return trials_.mean(); }

  void merge(const retrieval_reasoning_score& other) { trials_.merge(other.trials_); }

  // Fills p.retrieval_reasoning (shape must match, at least one kept trial) and its provenance.
  void to_profile(profile& p) const { trials_.fill_profile(p.retrieval_reasoning, p, "retrieval_reasoning"); }

  // {"<layer>-<head>": [kept trial scores]}: HeadKV's <model>_retrieval_reasoning_heads.json layout.
  json::value to_head_score_json() const { return trials_.head_score_json(); }

  json::value to_json() const {
    json::value v;
    trials_.write(v, kind);
    if (trial_open()) {
      v.set("span_begin", begin_);
      v.set("span_end", end_);
      v.set("scale", scale_);
    }
    return v;
  }

  static retrieval_reasoning_score from_json(const json::value& v) {
    detail::head_trials t = detail::head_trials::read(v, kind);
    retrieval_reasoning_score s(t.layers(), t.q_heads());
    s.trials_ = std::move(t);
    if (s.trial_open()) {
      const std::string w = kind;
      s.begin_ = detail::json_i64(detail::json_field(v, "span_begin", w), w + ": span_begin", 0, std::int64_t(1) << 52);
      s.end_ = detail::json_i64(detail::json_field(v, "span_end", w), w + ": span_end", s.begin_ + 1,
                                std::int64_t(1) << 52);
      const json::value& sc = detail::json_field(v, "scale", w);
      detail::require(sc.is_number() && std::isfinite(sc.as_number()) && sc.as_number() > 0.0, w,
                      ": scale must be a number > 0");
      s.scale_ = sc.as_number();
    }
    return s;
  }

  static constexpr const char* kind = "retrieval_reasoning_score";

 private:
  detail::head_trials trials_;
  index_t begin_ = 0, end_ = 0;
  double scale_ = 1.0;
  std::vector<index_t> order_;  // scratch for the top-N threshold
};

}  // namespace kvtrim
