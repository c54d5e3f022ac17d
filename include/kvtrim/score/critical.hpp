#pragma once
// CriticalKV's scorer (Feng et al., "Identify Critical KV Cache in LLM Inference from an Output
// Perturbation Perspective", 2025, arXiv:2502.03805): a window scorer's attention is re-weighted
// by how much each value moves the attention output, ||v_j W_o||_1, and the budget is filled in
// two stages: the first `first_stage` fraction of each head's budget by the raw attention score,
// the rest by (score + epsilon) x projected value norm.
//
// Reference: kvpress CriticalKVPress / CriticalAdaKVPress (presses/criticalkv_press.py, NVIDIA/
// kvpress 8bb29b9): vwl1norm = the L1 norm over the hidden dimension of V_h W_o^(i) for every
// query head i (W_o^(i) = o_proj.weight.T viewed [q_heads][head_dim][hidden]), averaged over the
// G query heads of the KV head; stage 1 keeps top int(b * first_stage_ratio) of the base scores
// (b = the head's kept count, window tokens included -- kvpress's window tokens carry the max
// score and so sit in stage 1), stage 2 ranks the rest by (score + epsilon) * vwl1norm; defaults
// epsilon = 1e-4, first_stage_ratio = 0.5, alpha_safeguard = 0.2 (the Ada-KV allocator).
//
// Deliberate differences:
//  - sums instead of means (over the window's w queries and the G query heads, both for the score
//    and for the norm); epsilon is scaled by w x G so (sum + w G eps) x norm_sum orders the tokens
//    exactly as kvpress's (mean + eps) x norm_mean does;
//  - stage 1 counts the window: max(0, floor(first_stage x b) - w) candidates by raw score, the
//    w window tokens being kvtrim's always-kept rows (kvpress: the window's max-score tokens);
//  - the base scorer is kvtrim's window attention with the registry's shared window (8) and
//    pooling (max, kernel 7) rather than kvpress SnapKVPress's window 64 / avg 5 (equal
//    conditions with every other method; --window / --pooling / --kernel change them);
//  - ties go to the lower index as everywhere in kvtrim;
//  - kvtrim compacts the kept rows (real memory); kvpress masks them.
//
// Input: layer_kv::out_proj (method_info::needs_out_proj): W_o per query head. Cost: one
// (c x d) . (d x hidden) product per query head, O(n q_heads d hidden) per layer, in key blocks.
#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "kvtrim/score/token_scorer.hpp"
#include "kvtrim/score/window_attention.hpp"

namespace kvtrim {

// Checks layer_kv::out_proj against the window queries: [q_heads][hidden > 0][head_dim].
template <class T>
void check_out_proj(const layer_kv<T>& kv, const char* who) {
  detail::require(kv.out_proj.data() != nullptr, who,
                  " needs layer_kv::out_proj (the o_proj weight W_o per query head, "
                  "[q_head][hidden][head_dim]); the host did not pass it");
  detail::check_view(kv.out_proj, "out_proj");
  detail::require(kv.out_proj.heads() == kv.queries.heads() && kv.out_proj.dim() == kv.keys.dim() &&
                      kv.out_proj.tokens() > 0,
                  who, ": out_proj shape [", kv.out_proj.heads(), "][", kv.out_proj.tokens(), "][",
                  kv.out_proj.dim(), "] must be [", kv.queries.heads(), "][hidden][", kv.keys.dim(), "]");
}

// Per KV head h and candidate j: sum over the G query heads i of h of || v_hj W_o^(i) ||_1.
template <class T>
std::vector<float> projected_value_norms(const layer_kv<T>& kv, index_t candidates) {
  using row_matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const index_t H = kv.kv_heads(), G = kv.group(), d = kv.keys.dim(), hidden = kv.out_proj.tokens();
  std::vector<float> out(static_cast<size_t>(H * candidates), 0.0f);
  constexpr index_t block = 256;
  const index_t blocks = (candidates + block - 1) / block;
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1) if (H * blocks > 1)
#endif
  for (index_t task = 0; task < H * blocks; ++task) {
    const index_t h = task / blocks, j0 = (task % blocks) * block;
    const index_t rows = std::min(block, candidates - j0);
    row_matrix vb(rows, d), wo(d, hidden), prod(rows, hidden);
    for (index_t r = 0; r < rows; ++r)
      for (index_t x = 0; x < d; ++x) vb(r, x) = to_float(kv.values(h, j0 + r, x));
    for (index_t g = 0; g < G; ++g) {
      const index_t i = h * G + g;
      for (index_t x = 0; x < d; ++x)
        for (index_t k = 0; k < hidden; ++k) wo(x, k) = to_float(kv.out_proj(i, k, x));
      prod.noalias() = vb * wo;
      for (index_t r = 0; r < rows; ++r)
        out[static_cast<size_t>(h * candidates + j0 + r)] += prod.row(r).cwiseAbs().sum();
    }
  }
  return out;
}

template <class Base = window_attention>
struct critical {
  Base base{};
  double epsilon = 1e-4;      // kvpress's default, per mean score (scaled by w x G, see above)
  double first_stage = 0.5;   // kvpress's first_stage_ratio

  void validate() const {
    detail::require(std::isfinite(epsilon) && epsilon >= 0, "critical: epsilon ", epsilon, " must be >= 0");
    detail::require(first_stage >= 0 && first_stage <= 1, "critical: first_stage ", first_stage,
                    " must be in [0, 1]");
  }

  template <class T>
  token_scores score(int layer, const layer_kv<T>& kv, const std::vector<int>& heads,
                     const model_shape& shape) const {
    check_scoring_input(layer, kv, heads, shape);
    check_out_proj(kv, "criticalkv");
    token_scores s = base.score(layer, kv, heads, shape);
    detail::require(!s.shared, "critical: the base scorer must score per KV head");
    s.weights = projected_value_norms(kv, s.candidates);
    s.weight_epsilon = epsilon * static_cast<double>(kv.window()) * static_cast<double>(shape.group());
    return s;
  }

  // Stage 1: the top max(0, floor(first_stage * b) - w) candidates of each head by raw score get
  // +inf; stage 2: every other candidate scores (raw + w G epsilon) x projected norm.
  token_scores rank(const token_scores& s, const std::vector<index_t>& budgets) const {
    detail::require(s.weights.size() == s.values.size(),
                    "critical: scores without projected value norms (weights)");
    const double eps = s.weight_epsilon;
    token_scores out = s;
    const index_t c = s.candidates;
    std::vector<index_t> order(static_cast<size_t>(c));
    for (index_t h = 0; h < s.rows(); ++h) {
      const float* raw = s.row(h);
      const float* wt = s.weights.data() + h * c;
      float* o = out.row(h);
      const index_t b = budgets.at(static_cast<size_t>(h));
      const auto first = static_cast<index_t>(std::floor(first_stage * static_cast<double>(b)));
      const index_t n1 = std::clamp<index_t>(first - s.window, 0, c);
      std::iota(order.begin(), order.end(), index_t{0});
      std::partial_sort(order.begin(), order.begin() + n1, order.end(), [raw](index_t a, index_t x) {
        return raw[a] > raw[x] || (raw[a] == raw[x] && a < x);
      });
      for (index_t j = 0; j < c; ++j) o[j] = static_cast<float>((double(raw[j]) + eps) * double(wt[j]));
      for (index_t k = 0; k < n1; ++k) o[order[static_cast<size_t>(k)]] = std::numeric_limits<float>::infinity();
    }
    out.weights.clear();
    return out;
  }
};

}  // namespace kvtrim
