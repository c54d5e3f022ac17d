#pragma once
// Ada-KV's head-adaptive budgets within a layer (Feng et al., "Ada-KV: Optimizing KV Cache
// Eviction by Adaptive Budget Allocation for Efficient LLM Inference", arXiv:2407.11550): heads
// whose attention is spread out get more of the layer's budget, concentrated heads less.
//
// The layer's budget comes from an inner allocator (uniform = Ada-KV as published; pyramid =
// Ada-KV + PyramidKV, the reference's pyram_mode; error_aware, head_pool, cake_layers work too):
// the layer has S = sum over its local KV heads of (inner budget - w) candidate slots, which is
// H_kv * (B_l - w) for a layer-level inner allocator. Then, from the layer's token scores:
//   count_h = how many of the S globally top-scored (head, token) pairs head h wins
//             (ties: lower head, then lower token);
//   cap_h   = round((1 - alpha) * count_h + alpha * S / H_kv)      floor alpha = 0.2 by default
//   sum cap_h made exactly S by the largest-remainder method (apportion.hpp: the rounded caps
//   when they already add up to S, else the heads with the largest fractional parts get the
//   remaining slots, the lower head first among equals), each cap at most n - w with what a
//   capped head can't hold re-split over the others (a safeguard: a head wins at most n - w
//   pairs and S / H_kv <= n - w, so no quota exceeds n - w);
//   head h keeps cap_h top candidates plus the w window tokens.
// So a head that wins every pair still leaves alpha * S / H_kv slots to each other head, and the
// layer's total is exactly what the inner allocator gave it. Clipping follows the inner
// allocator (plan.hpp): B >= n keeps everything, B < w only the window.
//
// Confirmed against the official code, FFY0/AdaKV adaptive_snapkv/monkeypatch/snapkv_utils.py,
// AdaptiveSnapKVCluster.update_kv (and its GQA variant): sort each head's scores, topk over the
// flattened [head][sorted score] array with k = H * base_capacity, count per head by index //
// length, head_adaptive_capacity = torch.round(count * (1 - floor_alpha) + floor_capacity).
// Differences: the reference's floor_capacity = int(base_capacity * floor_alpha) truncates, so its
// caps add up to up to H_kv tokens less than the layer's budget, and torch.round alone is not made
// exact; kvtrim uses alpha * (B - w) unrounded and apportions exactly. torch.topk's order among
// equal scores is unspecified; here ties go to the lower head.
// Shared scores (one row for the whole layer, CompressKV-style) carry no per-head information:
// every head then gets the inner allocator's budget unchanged.
// Tensor parallelism: a shard decides over its own KV heads only (scores.kv_heads of them).
#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <utility>
#include <vector>

#include "kvtrim/allocate/apportion.hpp"
#include "kvtrim/allocate/budget_allocator.hpp"
#include "kvtrim/allocate/uniform.hpp"
#include "kvtrim/core/error.hpp"
#include "kvtrim/core/scores.hpp"
#include "kvtrim/core/shape.hpp"

namespace kvtrim {

template <class Inner = uniform>
class head_adaptive {
 public:
  struct state : budget_frame {
    typename Inner::state inner;
  };

  explicit head_adaptive(double alpha = 0.2, Inner inner = Inner()) : alpha_(alpha),
                                                                      inner_(std::move(inner)) {
    detail::require(std::isfinite(alpha_) && alpha_ >= 0.0 && alpha_ <= 1.0,
                    "head_adaptive: floor alpha ", alpha_, " must be in [0, 1]");
  }

  double alpha() const { return alpha_; }
  const Inner& inner() const { return inner_; }

  state begin(const model_shape& shape, index_t budget, index_t prompt, index_t window) const {
    state st;
    static_cast<budget_frame&>(st) =
        detail::make_budget_frame(shape, budget, prompt, window, "head_adaptive");
    st.inner = inner_.begin(shape, budget, prompt, window);
    return st;
  }

  std::vector<index_t> head_budgets(state& st, int layer, const token_scores& scores) const {
    detail::check_layer_index(st, layer, "head_adaptive");
    detail::check_scores_for_frame(st, scores, "head_adaptive");
    std::vector<index_t> out = inner_.head_budgets(st.inner, layer, scores);
    if (scores.shared) return out;
    const index_t w = st.window;
    const index_t c = scores.candidates;
    const index_t H = scores.kv_heads;
    index_t slots = 0;
    for (index_t t : out) slots += t - w;
    if (slots == 0 || slots >= H * c) return out;  // nothing to move: all window, or all kept
    for (float v : scores.values)
      detail::require(!std::isnan(v), "head_adaptive: NaN in the token scores of layer ", layer);

    const std::vector<index_t> count = pairs_won(scores, slots);
    const double floor_share = alpha_ * static_cast<double>(slots) / static_cast<double>(H);
    std::vector<double> quota(static_cast<size_t>(H));
    for (size_t h = 0; h < quota.size(); ++h)
      quota[h] = (1.0 - alpha_) * static_cast<double>(count[h]) + floor_share;
    const std::vector<index_t> cap =
        detail::apportion(quota, slots, std::vector<index_t>(quota.size(), c));
    for (size_t h = 0; h < out.size(); ++h) out[h] = cap[h] + w;
    return out;
  }

  index_t layer_budget(const state& st, int layer) const {
    return inner_.layer_budget(st.inner, layer);
  }

 private:
  // Per head, how many of the `slots` top-scored (head, token) pairs it wins. The slots-th
  // largest value is the threshold: values above it all win; of the values equal to it, the
  // lower heads win first (one pass, no sort of the whole array).
  static std::vector<index_t> pairs_won(const token_scores& s, index_t slots) {
    std::vector<float> all(s.values);
    const auto kth = all.begin() + (slots - 1);
    std::nth_element(all.begin(), kth, all.end(), std::greater<float>());
    const float threshold = *kth;
    std::vector<index_t> won(static_cast<size_t>(s.kv_heads), 0);
    std::vector<index_t> equal(won.size(), 0);
    index_t taken = 0;
    for (index_t h = 0; h < s.kv_heads; ++h) {
      const float* row = s.row(h);
      for (index_t t = 0; t < s.candidates; ++t) {
        if (row[t] > threshold) ++won[static_cast<size_t>(h)];
        else if (row[t] == threshold) ++equal[static_cast<size_t>(h)];
      }
      taken += won[static_cast<size_t>(h)];
    }
    index_t left = slots - taken;
    for (size_t h = 0; h < won.size() && left > 0; ++h) {
      const index_t more = std::min(equal[h], left);
      won[h] += more;
      left -= more;
    }
    return won;
  }

  double alpha_;
  Inner inner_;
};

}  // namespace kvtrim
