#pragma once
// CompressKV's error-aware layer budgets (Lin et al., "CompressKV: Semantic Retrieval Heads Know
// What Tokens are Not Important Before Generation", arXiv:2508.02401, Algorithm 1): layers whose
// eviction hurts more (larger offline eviction-error weight) keep more.
//
// From per-layer weights e_l >= 0, normalised to e~_l = e_l / sum e:
//   B_l = clip(m + round(e~_l * (L*B - L*m)), m, 3B)        round = half-to-even (np.round)
// then, while sum B_l != L*B, one pass over the layers that can still move — below 3B when adding,
// in order of decreasing e~; above m when removing, in order of increasing e~ — moves each by one
// token until the total is exact. Ties go to the lower layer. m = 32 by default.
//
// Confirmed against the official code, TUDa-HWAI/CompressKV longbench/pred_compresskv.py,
// error_aware_layer_budget_allocation(layer_ratio, L*B, 32, 3*B) with layer_ratio = the
// "avg_score" of <model>_layer_score.jsonl. Differences, all deliberate:
//  - the reference uses the weights as given (they are already normalised in the published
//    files); kvtrim normalises, so any non-negative weights work;
//  - the reference orders with np.argsort (quicksort, not stable): tie order is unspecified there,
//    lower layer first here;
//  - the prompt: the reference lets a layer whose B_l exceeds the prompt keep the whole prompt and
//    loses the difference; kvtrim caps every layer at min(3B, n) inside the algorithm, so what a
//    short prompt can't hold in one layer goes to the others and the total stays exactly L*B
//    whenever B < n (B >= n keeps the whole prompt in every layer);
//  - the floor: m is clipped to B when B < m (the formula then has nothing to distribute and
//    every layer keeps B), and raised to min(w, n) when the window is larger than m, since no
//    layer can keep fewer than its window tokens. B < w keeps only the window (plan.hpp).
#include <cmath>
#include <utility>
#include <vector>

#include "kvtrim/allocate/apportion.hpp"
#include "kvtrim/allocate/budget_allocator.hpp"
#include "kvtrim/core/error.hpp"
#include "kvtrim/core/scores.hpp"
#include "kvtrim/core/shape.hpp"

namespace kvtrim {

class error_aware {
 public:
  struct state : budget_frame {
    std::vector<index_t> layer_tokens;  // B_l per layer, window included, clipped
  };

  // weights: one per layer, finite, >= 0, not all 0 (the profile's eviction-error weights).
  // min_tokens: m, >= 0.
  explicit error_aware(std::vector<double> weights, index_t min_tokens = 32)
      : normalised_(std::move(weights)), min_tokens_(min_tokens) {
    detail::require(!normalised_.empty(), "error_aware: no layer weights");
    double sum = 0.0;
    for (size_t l = 0; l < normalised_.size(); ++l) {
      detail::require(std::isfinite(normalised_[l]) && normalised_[l] >= 0.0,
                      "error_aware: weight ", normalised_[l], " of layer ", l,
                      " must be finite and >= 0");
      sum += normalised_[l];
    }
    detail::require(sum > 0.0 && std::isfinite(sum), "error_aware: the ", normalised_.size(),
                    " layer weights sum to ", sum, "; need a finite sum > 0");
    detail::require(min_tokens_ >= 0, "error_aware: min_tokens ", min_tokens_, " must be >= 0");
    for (double& e : normalised_) e /= sum;
  }

  const std::vector<double>& weights() const { return normalised_; }  // e~, sums to 1
  index_t min_tokens() const { return min_tokens_; }

  state begin(const model_shape& shape, index_t budget, index_t prompt, index_t window) const {
    state st{detail::make_budget_frame(shape, budget, prompt, window, "error_aware"), {}};
    detail::require(normalised_.size() == static_cast<size_t>(st.layers), "error_aware: ",
                    normalised_.size(), " layer weights for a model of ", st.layers, " layers");
    const auto L = static_cast<index_t>(st.layers);
    const index_t b = std::min(st.budget, st.prompt);              // what each layer averages
    const index_t lo = std::min(std::max(min_tokens_, st.window), b);  // m, clipped (see above)
    const index_t hi = std::min(3 * b, st.prompt);
    const auto Ls = static_cast<size_t>(L);
    std::vector<index_t> v(Ls);
    const auto pool = static_cast<double>(L * b - L * lo);
    for (size_t l = 0; l < Ls; ++l)
      v[l] = std::clamp(lo + detail::round_half_even_index(normalised_[l] * pool), lo, hi);
    detail::settle_by_passes(v, L * b, std::vector<index_t>(Ls, lo), std::vector<index_t>(Ls, hi),
                             [this](size_t l) { return normalised_[l]; });
    st.layer_tokens.resize(Ls);
    for (size_t l = 0; l < Ls; ++l) st.layer_tokens[l] = st.clip(v[l]);
    return st;
  }

  std::vector<index_t> head_budgets(state& st, int layer, const token_scores& scores) const {
    detail::check_layer_index(st, layer, "error_aware");
    detail::check_scores_for_frame(st, scores, "error_aware");
    return detail::same_for_every_head(st, scores, st.layer_tokens[static_cast<size_t>(layer)]);
  }

  index_t layer_budget(const state& st, int layer) const {
    detail::check_layer_index(st, layer, "error_aware");
    return st.layer_tokens[static_cast<size_t>(layer)];
  }

 private:
  std::vector<double> normalised_;
  index_t min_tokens_;
};

}  // namespace kvtrim
