#pragma once
// The head-selector role: which query heads of a layer score its tokens.
//
// Contract (checked by compressor<...> with static_assert):
//   std::vector<int> heads(int layer, const model_shape& shape) const;
// returns ascending query-head ids in [0, shape.q_heads) (an empty list means every head) and
// throws kvtrim::error for a layer outside the model. The selector decides for the whole model;
// a tensor-parallel shard's scorer keeps the heads that fall inside its shard.
//
// Implementations: all_heads (every head), retrieval_heads (CompressKV's top-k per layer).
#include <type_traits>
#include <utility>
#include <vector>

#include "kvtrim/core/shape.hpp"

namespace kvtrim {

template <class S, class = void>
struct is_head_selector : std::false_type {};
template <class S>
struct is_head_selector<S, std::void_t<decltype(std::declval<const S&>().heads(
                               0, std::declval<const model_shape&>()))>>
    : std::is_same<decltype(std::declval<const S&>().heads(0, std::declval<const model_shape&>())),
                   std::vector<int>> {};
template <class S>
inline constexpr bool is_head_selector_v = is_head_selector<S>::value;

}  // namespace kvtrim
