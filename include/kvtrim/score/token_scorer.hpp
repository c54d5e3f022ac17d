#pragma once
// The token-scorer role: how important each prompt token is to each KV head of a layer.
//
// Contract (checked by compressor<...> with static_assert), for T = float, half, bfloat16:
//   template <class T>
//   token_scores score(int layer, const layer_kv<T>& kv, const std::vector<int>& heads,
//                      const model_shape& shape) const;
// `heads` is the head selector's answer for the layer (global query-head ids, ascending; empty =
// all). The result covers kv's KV heads [kv.kv_head_offset, + kv.kv_heads()) with one row per KV
// head, or one shared row for the layer, of n - w candidate scores (the window is always kept and
// needs none): higher keeps. A scorer whose ranking depends on each head's budget (CriticalKV's
// two stages) also provides `token_scores rank(const token_scores&, const std::vector<index_t>&
// budgets) const`: the compressor calls it after the allocator (which sees the raw scores) and
// selects from its result. Scorers may read layer_kv's optional inputs (out_proj,
// attention_sums, prompt_queries, rope) when their method_info declares them. Rows must be SUMS over whatever contributes (query heads, shards),
// so a tensor-parallel engine can add its ranks' partial scores (token_scores::accumulate) and
// reach the single-rank decision. Bad input throws kvtrim::error before anything is read; the
// scorer never writes K or V.
//
// The building blocks a scorer composes (all public, none in detail::):
//   check_scoring_input(layer, kv, heads, shape)   every shape check above, one call
//   make_scores(kv, aggregation)                   a zeroed token_scores of the right shape
//   group_heads(kv, heads, shape, aggregation)     which query heads add into which row (GQA)
//   window_attention_pass(...)                     softmax of the window's queries over all keys
//   pool_and_aggregate(raw, groups, pooling, k, out) pooling per query head, then the row sums
// docs/ADDING_A_METHOD.md writes a scorer from this page alone.
//
// Implementations: window_attention (SnapKV family), cake_scores, streaming, random_scores,
// knorm, tova, keydiff, chunked<>, critical<> (CriticalKV), observed_attention (H2O),
// expected_attention, no_scores (compose/keep_all.hpp).
#include <type_traits>
#include <utility>
#include <vector>

#include "kvtrim/core/layer_kv.hpp"
#include "kvtrim/core/scores.hpp"
#include "kvtrim/core/shape.hpp"
#include "kvtrim/score/aggregation.hpp"
#include "kvtrim/score/pooling.hpp"
#include "kvtrim/score/window_softmax.hpp"

namespace kvtrim {

// Zeroed scores for kv's KV heads: one row per KV head, or one row for the layer when shared.
template <class T>
token_scores make_scores(const layer_kv<T>& kv, aggregation agg = aggregation::per_kv_head) {
  return token_scores::make(agg == aggregation::shared, kv.kv_heads(), kv.kv_head_offset,
                            kv.prompt_length(), kv.window());
}

template <class S, class T, class = void>
struct is_token_scorer_for : std::false_type {};
template <class S, class T>
struct is_token_scorer_for<
    S, T,
    std::void_t<decltype(std::declval<const S&>().score(0, std::declval<const layer_kv<T>&>(),
                                                        std::declval<const std::vector<int>&>(),
                                                        std::declval<const model_shape&>()))>>
    : std::is_same<decltype(std::declval<const S&>().score(0, std::declval<const layer_kv<T>&>(),
                                                           std::declval<const std::vector<int>&>(),
                                                           std::declval<const model_shape&>())),
                   token_scores> {};
template <class S>
inline constexpr bool is_token_scorer_v = is_token_scorer_for<S, float>::value &&
                                          is_token_scorer_for<S, half>::value &&
                                          is_token_scorer_for<S, bfloat16>::value;

}  // namespace kvtrim
