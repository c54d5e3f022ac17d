#pragma once
// CAKE's token scorer (Qin et al., "CAKE: Cascading and Adaptive KV Cache Eviction with Layer
// Preferences", ICLR 2025, arXiv:2503.12491) and the layer statistics its allocator needs.
//
// What the official code does (github.com/antgroup/cakekv, as mirrored in qtris123/cakekv:
// cake/model/modify_llama.py llama_attn_forward_cake, cake/utils.py calculate_entropy,
// experiments/LongBench/pred_cake.py), and what this scorer reproduces:
//   A = softmax(q_window . K^T / sqrt(d)) with SnapKV's causal window mask, float32;
//   eviction indicator per query head and key: mean_i A[i, j] + gamma * var_i A[i, j]
//     (torch.var over the w window queries: unbiased), keys before the window only,
//     F.avg_pool1d(kernel 5, padding 2, stride 1), then the mean over the G query heads of a KV
//     head (here: the sum, see aggregation.hpp); gamma defaults to 200 (--gamma 200.0);
//   spatial dispersion H = -sum A log(A + 1e-10) over A[-w:, :-w] (window rows, candidate keys,
//     not renormalised); temporal shift V = sum over candidate keys of var_i A[i, j];
//   layer preference P = H^(1/tau1) * V^(1/tau2) (the allocator's business; tau per model,
//     config/model2tau.json, 1.0 / 1.0 when absent).
// The official H and V sum over every query head and window query; here H is averaged over the
// window queries and both are summed over the contributing heads into token_scores'
// entropy_sum / variance_sum with stat_heads = their count, so an allocator can take per-head
// means and shards can all-reduce. These differ from the official values only by factors that
// are equal for every layer (w, and the head count when all heads score), which cancel in CAKE's
// normalised layer budgets P_l / sum P.
// With w = 1 the variance is taken as 0 (torch.var would give NaN).
#include <cmath>
#include <vector>

#include "kvtrim/core/error.hpp"
#include "kvtrim/core/layer_kv.hpp"
#include "kvtrim/core/scores.hpp"
#include "kvtrim/core/shape.hpp"
#include "kvtrim/score/token_scorer.hpp"
#include "kvtrim/score/window_attention.hpp"
#include "kvtrim/score/pooling.hpp"
#include "kvtrim/score/window_softmax.hpp"

namespace kvtrim {

struct cake_scores {
  double gamma = 200.0;         // weight of the temporal variance (official default)
  pooling pool = pooling::avg;  // official: avg_pool1d
  int kernel = 5;               // official: 5
  aggregation aggregate = aggregation::per_kv_head;

  void validate() const {
    detail::require(std::isfinite(gamma) && gamma >= 0.0, "cake: gamma ", gamma,
                    " must be finite and >= 0");
    detail::check_kernel(kernel);
  }

  template <class T>
  token_scores score(int layer, const layer_kv<T>& in, const std::vector<int>& heads,
                     const model_shape& shape) const {
    validate();
    const float inv_w = 1.0f / static_cast<float>(in.window());
    const auto g = static_cast<float>(gamma);
    return pooled_window_scores(
        layer, in, heads, shape, aggregate, pool, kernel, true,
        [inv_w, g](float sum, float var) { return sum * inv_w + g * var; }, true);
  }
};

}  // namespace kvtrim
