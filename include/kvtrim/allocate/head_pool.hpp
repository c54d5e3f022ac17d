#pragma once
// HeadKV's per-head budgets (Fu et al., "Not All Heads Matter: A Head-Level KV Cache Compression
// Method with Integrated Retrieval and Reasoning", arXiv:2410.19258), at KV-head granularity:
// every head gives part of its budget to a shared pool, which is handed out in proportion to
// offline retrieval-reasoning head scores.
//
// From per-layer, per-query-head scores s[l][h] >= 0 (each the mean of the head's per-trial
// scores, 0 for a head without any):
//   s~[l][h] = s[l][h] / sum over all layers and heads   (all zero: uniform, s~ = 1 / (L * H_q))
//   score[l][k] = sum of s~ over the G query heads of KV head k (query head h reads KV head h / G)
//   b = B - w;  pool = floor(b / beta) * L * H_kv;  base = b - floor(b / beta)
//   cap[l][k] = round_half_even(score[l][k] * pool + base)
//   KV head k of layer l keeps min(cap, n - w) top candidates plus the w window tokens.
// floor(b / beta) is Python's float floor division (see apportion.hpp: 101 // 1.01 = 99).
//
// Totals. The quotas score * pool + base add up to exactly L * H_kv * b, but rounding each one
// does not: the formula's total is sum over (l, k) of min(cap, n - w) + w, which may differ from
// L * H_kv * B by up to L * H_kv / 2 tokens either way (and falls short when caps hit n - w).
// total::exact (opt-in; what the runtime uses for equal-bytes comparisons) apportions the same
// quotas by the largest-remainder method instead (apportion.hpp: floor, then one more token to
// the heads with the largest fractional parts, the lower (layer, head) first among equals), caps
// each head at n - w and re-splits what the capped heads can't hold over the others in
// proportion to their quotas: the total is then exactly L * H_kv * B whenever w <= B < n. Where
// the formula's rounded caps already add up to L * H_kv * b and no cap reaches n - w, both modes
// give the formula's caps.
// Clipping (plan.hpp): B >= n keeps the whole prompt in every head (the reference's cut-off is
// `if base_capacity > q_len - w: not compress`, i.e. B > n), B < w keeps only the window.
//
// Confirmed against the official code, FYYFU/HeadKV headkv/snapkv_utils.py, ReasonSnapKVCluster:
// head_score = np.mean(per-trial scores) / sum, total_pool_capacity = (base_capacity // beta) *
// L * H, min_num = base_capacity - base_capacity // beta, head_capacity = torch.round(score *
// pool + min_num) (half-to-even), each head keeps its top `head_capacity` plus the window.
// Differences: the reference works per QUERY head (H = num_attention_heads, the cache expanded to
// query heads); kvtrim sums each GQA group's scores into its KV head, so the cache is never
// expanded. The reference's `temp` exponent (default 1.0, identity) is not offered.
//
// beta: finite, >= 1 (default 1.01, as the brief; the paper's runs use 1.005 ... 1.2). beta < 1
// would make base = b - floor(b / beta) negative (heads promised fewer than zero candidates);
// beta = 1 is the limit where the whole budget is pooled (base = 0) and is accepted.
#include <cmath>
#include <numeric>
#include <utility>
#include <vector>

#include "kvtrim/allocate/apportion.hpp"
#include "kvtrim/allocate/budget_allocator.hpp"
#include "kvtrim/core/error.hpp"
#include "kvtrim/core/scores.hpp"
#include "kvtrim/core/shape.hpp"

namespace kvtrim {

class head_pool {
 public:
  enum class total { formula, exact };

  struct state : budget_frame {
    std::vector<std::vector<index_t>> head_tokens;  // [layer][KV head], window included, clipped
  };

  // head_scores[l][h]: layer l, query head h (global index), finite and >= 0.
  explicit head_pool(std::vector<std::vector<double>> head_scores, double beta = 1.01,
                     total mode = total::formula)
      : scores_(std::move(head_scores)), beta_(beta), mode_(mode) {
    detail::require(std::isfinite(beta_) && beta_ >= 1.0, "head_pool: beta ", beta_,
                    " must be finite and >= 1");
    detail::require(!scores_.empty(), "head_pool: no layers of head scores");
    for (size_t l = 0; l < scores_.size(); ++l) {
      detail::require(!scores_[l].empty() && scores_[l].size() == scores_[0].size(),
                      "head_pool: layer ", l, " has ", scores_[l].size(),
                      " head scores, layer 0 has ", scores_[0].size());
      for (size_t h = 0; h < scores_[l].size(); ++h)
        detail::require(std::isfinite(scores_[l][h]) && scores_[l][h] >= 0.0, "head_pool: score ",
                        scores_[l][h], " of layer ", l, " head ", h, " must be finite and >= 0");
    }
  }

  double beta() const { return beta_; }
  total mode() const { return mode_; }

  state begin(const model_shape& shape, index_t budget, index_t prompt, index_t window) const {
    state st{detail::make_budget_frame(shape, budget, prompt, window, "head_pool"), {}};
    detail::require(scores_.size() == static_cast<size_t>(st.layers) &&
                        scores_[0].size() == static_cast<size_t>(st.q_heads),
                    "head_pool: head scores for ", scores_.size(), " layers x ", scores_[0].size(),
                    " query heads, the model has ", st.layers, " x ", st.q_heads);
    const auto Ls = static_cast<size_t>(st.layers);
    const auto K = static_cast<size_t>(st.kv_heads);
    const auto G = static_cast<size_t>(st.group());
    st.head_tokens.assign(Ls, std::vector<index_t>(K, st.prompt));
    if (st.budget >= st.prompt) return st;

    double sum = 0.0;
    for (const auto& row : scores_) sum = std::accumulate(row.begin(), row.end(), sum);
    detail::require(std::isfinite(sum), "head_pool: head scores sum to ", sum);
    const double uniform = 1.0 / static_cast<double>(Ls * K * G);

    const index_t b = st.budget > st.window ? st.budget - st.window : 0;
    const auto pooled = static_cast<index_t>(detail::floor_quotient(static_cast<double>(b), beta_));
    const double pool = static_cast<double>(pooled) * static_cast<double>(Ls * K);
    const auto base = static_cast<double>(b - pooled);
    std::vector<double> quota(Ls * K);
    for (size_t l = 0; l < Ls; ++l)
      for (size_t k = 0; k < K; ++k) {
        double score = 0.0;
        for (size_t g = 0; g < G; ++g) score += sum > 0.0 ? scores_[l][k * G + g] / sum : uniform;
        quota[l * K + k] = score * pool + base;
      }

    const index_t room = st.candidates();
    std::vector<index_t> cand(quota.size());
    if (mode_ == total::exact) {
      cand = detail::apportion(quota, static_cast<index_t>(Ls * K) * b,
                               std::vector<index_t>(quota.size(), room));
    } else {
      for (size_t i = 0; i < quota.size(); ++i)
        cand[i] = std::min(detail::round_half_even_index(quota[i]), room);
    }
    for (size_t l = 0; l < Ls; ++l)
      for (size_t k = 0; k < K; ++k) st.head_tokens[l][k] = st.clip(cand[l * K + k] + st.window);
    return st;
  }

  std::vector<index_t> head_budgets(state& st, int layer, const token_scores& scores) const {
    detail::check_layer_index(st, layer, "head_pool");
    detail::check_scores_for_frame(st, scores, "head_pool");
    const auto& row = st.head_tokens[static_cast<size_t>(layer)];
    const auto first = row.begin() + scores.kv_head_offset;
    return std::vector<index_t>(first, first + scores.kv_heads);
  }

  // Every KV head's budget of a layer (all shards), window included.
  const std::vector<index_t>& planned_heads(const state& st, int layer) const {
    detail::check_layer_index(st, layer, "head_pool");
    return st.head_tokens[static_cast<size_t>(layer)];
  }

  // The layer's mean per-KV-head budget, rounded half-to-even (reporting only).
  index_t layer_budget(const state& st, int layer) const {
    const auto& row = planned_heads(st, layer);
    const index_t sum = std::accumulate(row.begin(), row.end(), index_t{0});
    return detail::round_half_even_index(static_cast<double>(sum) /
                                         static_cast<double>(row.size()));
  }

 private:
  std::vector<std::vector<double>> scores_;
  double beta_;
  total mode_;
};

}  // namespace kvtrim
