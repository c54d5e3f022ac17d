#pragma once
// H2O's scorer (Zhang et al., "H2O: Heavy-Hitter Oracle for Efficient Generative Inference of
// Large Language Models", 2023, arXiv:2306.14048): a token's importance is the attention it has
// received, accumulated over every prompt query -- the "heavy hitters".
//
// Reference: kvpress ObservedAttentionPress (presses/observed_attention_press.py, NVIDIA/kvpress
// 8bb29b9): scores = attentions.sum over queries / (n - j), the number of queries that can see
// key j (causal), then the mean over the G query heads of the KV head; it needs the eager
// attention matrix. kvtrim needs only its column sums, which the engine accumulates during its
// own prefill attention (layer_kv::attention_sums, method_info::needs_attention_sums):
//   attention_sums(i, j, 0) = sum over prompt queries t >= j of softmax(q_t K^T / sqrt(d))_j,
// for query head i -- n floats per query head, never the n x n matrix. An engine with a
// flash-style attention has each row's max m and sum l at the end of its pass; a second Q.K^T pass
// adds exp((s - m) / sqrt(d)) / l into per-key sums (no P.V product). The reference host
// (examples/engine/model.cpp, causal_attention) does exactly that, by key tile so every sum is
// added in one fixed order, and only when the method asks for it (prefill_hook::with_extras);
// docs/BENCHMARKS.md "Prefill inputs of h2o and expected_attention" has the measured overhead.
//
// Deliberate differences: sums over the G query heads instead of the mean (same order);
// `normalize = none` gives H2O's own raw accumulated sum (the paper's score, which favours early
// tokens); `count` (default) is kvpress's division by n - j. H2O's recent-token half of the
// budget is not reproduced: kvtrim keeps its observation window (w, default 8) as the recent
// tokens; H2O also evicts step by step during generation, kvtrim once at the end of prefill (as
// kvpress does). kvtrim compacts the kept rows; kvpress masks them.
#include <vector>

#include "kvtrim/score/token_scorer.hpp"

namespace kvtrim {

template <class T>
void check_attention_sums(const layer_kv<T>& kv, const char* who) {
  detail::require(kv.attention_sums.data() != nullptr, who,
                  " needs layer_kv::attention_sums (the column sums of the prefill attention, "
                  "[q_head][n][1]); the host did not pass them");
  detail::check_view(kv.attention_sums, "attention_sums");
  detail::require(kv.attention_sums.heads() == kv.queries.heads() &&
                      kv.attention_sums.tokens() >= kv.prompt_length() && kv.attention_sums.dim() >= 1,
                  who, ": attention_sums shape [", kv.attention_sums.heads(), "][",
                  kv.attention_sums.tokens(), "][", kv.attention_sums.dim(), "] must be [",
                  kv.queries.heads(), "][n = ", kv.prompt_length(), "][1]");
}

struct observed_attention {
  enum class normalize { count, none };
  normalize norm = normalize::count;  // kvpress: divide by the queries that see the key

  template <class T>
  token_scores score(int layer, const layer_kv<T>& kv, const std::vector<int>& heads,
                     const model_shape& shape) const {
    check_scoring_input(layer, kv, heads, shape);
    check_attention_sums(kv, "h2o");
    token_scores out = make_scores(kv, aggregation::per_kv_head);
    const head_groups groups = group_heads(kv, heads, shape, aggregation::per_kv_head);
    const index_t n = kv.prompt_length();
    for (index_t r = 0; r < groups.rows; ++r) {
      float* row = out.row(r);
      for (index_t i = groups.begin(r); i < groups.end(r); ++i) {
        const index_t qh = groups.local[static_cast<size_t>(i)];
        for (index_t j = 0; j < out.candidates; ++j) {
          const float a = kv.attention_sums(qh, j, 0);
          row[j] += norm == normalize::count ? a / static_cast<float>(n - j) : a;
        }
      }
    }
    return out;
  }
};

}  // namespace kvtrim
