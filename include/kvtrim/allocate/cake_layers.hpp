#pragma once
// CAKE's layer budgets (Qin et al., "CAKE: Cascading and Adaptive KV Cache Eviction with Layer
// Preferences", ICLR 2025, arXiv:2503.12491): a layer whose attention is spread out (high
// entropy) and shifts over the window (high variance) prefers a larger cache; budgets are
// recomputed in a cascade as layers arrive during prefill, so the whole cache never holds more
// than the final total.
//
// Layer preference, from the CAKE scorer's statistics (score/cake.hpp), as means over the heads
// that contributed: H_l = entropy_sum / stat_heads, V_l = variance_sum / stat_heads,
//   P_l = H_l^(1/tau1) * V_l^(1/tau2)          tau1 = tau2 = 1 by default.
// Cascade: with b = B - w and the candidate total T = L * b (ALL layers' share, from the first
// layer on), when layer l arrives every seen layer j <= l is given
//   b_j = P_j / sum_{k<=l} P_k * T          (all P zero: an equal share)
// capped at n - w, the candidates a layer has. Layer j keeps b_j + w tokens per KV head.
// The running total at stage l is exactly min(T, (l+1)(n - w)) candidates plus (l+1) windows:
// never above L * B, and exactly L * H_kv * B after the last layer (when w <= B < n).
// Clipping (plan.hpp): B >= n keeps the whole prompt in every layer, B < w keeps the window.
//
// Confirmed against the official code (github.com/antgroup/cakekv, read as the mirrors
// qtris123/cakekv cake/cake_cache.py CakeprefillKVCache.__call__ and cake/utils.py adjust_budgets,
// and TUDa-HWAI/CompressKV methods/cakekv/): total_size = (cache_size - window) * num_layers,
// layer_budgets = [P / sum(P seen so far) * total_size], adjust_budgets(.., seq_len - window),
// evict every seen layer to its budget. P = H^(1/tau1) * V^(1/tau2) in modify_llama.py; tau
// defaults 1.0 / 1.0 (pred_cake.py; tuned values per model in config/model2tau.json). So the
// cascade keeps the running total <= L * B, not (l+1) * B: the first layer may hold up to L * b
// candidates until later layers arrive. Differences:
//  - rounding: the reference truncates (np.array(dtype=int)), spreads the excess of clipped
//    layers evenly and fixes the remaining difference evenly, first layers first; kvtrim uses the
//    largest-remainder method with caps re-split in proportion to preference (apportion.hpp);
//  - monotonicity: an earlier layer's budget never grows (its evicted tokens are gone), so each
//    seen layer is also capped at its previous budget. The paper shows P_j / sum P only shrinks
//    as layers arrive; the cap only absorbs rounding, and keeps the total exact and reachable;
//  - H and V are per-head means (the reference sums over all heads): equal when every layer
//    scores with the same number of heads.
//
// Layers must arrive in order 0, 1, ..., L-1 (the cascade is sequential per sequence).
// current_layer_budgets() gives every seen layer's current budget, so the compose layer can
// re-trim earlier layers whose budget shrank.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "kvtrim/allocate/apportion.hpp"
#include "kvtrim/allocate/budget_allocator.hpp"
#include "kvtrim/core/error.hpp"
#include "kvtrim/core/scores.hpp"
#include "kvtrim/core/shape.hpp"

namespace kvtrim {

class cake_layers {
 public:
  struct state : budget_frame {
    std::vector<double> preference;   // P_j of each seen layer
    std::vector<index_t> layer_candidates;  // b_j of each seen layer (window excluded)
  };

  explicit cake_layers(double tau1 = 1.0, double tau2 = 1.0) : tau1_(tau1), tau2_(tau2) {
    detail::require(std::isfinite(tau1_) && tau1_ > 0.0 && std::isfinite(tau2_) && tau2_ > 0.0,
                    "cake_layers: tau1 ", tau1_, " and tau2 ", tau2_, " must be finite and > 0");
  }
  double tau1() const { return tau1_; }
  double tau2() const { return tau2_; }

  state begin(const model_shape& shape, index_t budget, index_t prompt, index_t window) const {
    return state{detail::make_budget_frame(shape, budget, prompt, window, "cake_layers"), {}, {}};
  }

  // P = H^(1/tau1) * V^(1/tau2) from a layer's scores.
  double preference(const token_scores& s) const {
    detail::require(s.stat_heads > 0.0 && std::isfinite(s.stat_heads), "cake_layers: stat_heads ",
                    s.stat_heads, " must be > 0 (score with the CAKE scorer)");
    const double h = s.entropy_sum / s.stat_heads;
    const double v = s.variance_sum / s.stat_heads;
    detail::require(std::isfinite(h) && h >= 0.0 && std::isfinite(v) && v >= 0.0,
                    "cake_layers: mean entropy ", h, " and mean variance ", v,
                    " must be finite and >= 0");
    const double p = std::pow(h, 1.0 / tau1_) * std::pow(v, 1.0 / tau2_);
    detail::require(std::isfinite(p), "cake_layers: preference ", p, " overflows");
    return p;
  }

  std::vector<index_t> head_budgets(state& st, int layer, const token_scores& scores) const {
    detail::check_layer_index(st, layer, "cake_layers");
    detail::check_scores_for_frame(st, scores, "cake_layers");
    const auto seen = static_cast<int>(st.preference.size());
    detail::require(layer == seen, "cake_layers: layer ", layer, " arrived but layer ", seen,
                    " is next (the cascade takes layers in order, once each)");
    const double p = preference(scores);  // validated before the state changes

    const index_t room = st.candidates();
    const index_t b = st.candidate_budget();
    const auto arrived = static_cast<index_t>(seen) + 1;
    const index_t total = std::min(static_cast<index_t>(st.layers) * b, arrived * room);
    std::vector<double> pref = st.preference;
    pref.push_back(p);
    const double sum = std::accumulate(pref.begin(), pref.end(), 0.0);
    std::vector<double> quota(pref.size());
    for (size_t j = 0; j < pref.size(); ++j)
      quota[j] = sum > 0.0 ? pref[j] / sum * static_cast<double>(total)
                           : static_cast<double>(total) / static_cast<double>(pref.size());
    std::vector<index_t> cap(pref.size(), room);
    for (size_t j = 0; j + 1 < pref.size(); ++j) cap[j] = std::min(room, st.layer_candidates[j]);

    st.layer_candidates = detail::apportion(quota, total, cap);
    st.preference = std::move(pref);
    return detail::same_for_every_head(st, scores, st.layer_candidates.back() + st.window);
  }

  // Current budget (window included) of every seen layer, in layer order; size = layers seen.
  std::vector<index_t> current_layer_budgets(const state& st) const {
    std::vector<index_t> out(st.layer_candidates.size());
    for (size_t j = 0; j < out.size(); ++j) out[j] = st.clip(st.layer_candidates[j] + st.window);
    return out;
  }

  // A seen layer's current budget; a layer not seen yet has none (kvtrim::error).
  index_t layer_budget(const state& st, int layer) const {
    detail::check_layer_index(st, layer, "cake_layers");
    detail::require(static_cast<size_t>(layer) < st.layer_candidates.size(), "cake_layers: layer ",
                    layer, " has no budget yet (", st.layer_candidates.size(), " layers seen)");
    return st.clip(st.layer_candidates[static_cast<size_t>(layer)] + st.window);
  }

 private:
  double tau1_;
  double tau2_;
};

}  // namespace kvtrim
