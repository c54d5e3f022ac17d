#pragma once
// The budget-allocator role: how many prompt tokens each layer and KV head keeps.
//
// Contract (checked by compressor<...> with static_assert):
//   struct state;                                            // per sequence, plain data
//   state begin(const model_shape&, index_t B, index_t n, index_t w) const;  // once per prompt
//   std::vector<index_t> head_budgets(state&, int layer, const token_scores&) const;
//   index_t layer_budget(const state&, int layer) const;    // what head_budgets averages to
// and, only for allocators whose earlier layers' budgets shrink as later layers arrive (CAKE):
//   std::vector<index_t> current_layer_budgets(const state&) const;   // every layer seen so far
// Budgets count retained prompt tokens per KV head INCLUDING the observation window, and are
// clipped to [min(w, n), n] (budget_frame.hpp says how each regime adds up). head_budgets gets
// the layer's scores so data-dependent allocators (Ada-KV, CAKE) can read them; it returns one
// budget per KV head of the scores (a tensor-parallel shard's heads only).
//
// Implementations: uniform, pyramid, error_aware, head_pool, head_adaptive<Inner>, cake_layers,
// keep_all (compose/keep_all.hpp).
#include <type_traits>
#include <utility>
#include <vector>

#include "kvtrim/allocate/budget_frame.hpp"
#include "kvtrim/core/scores.hpp"
#include "kvtrim/core/shape.hpp"

namespace kvtrim {

template <class A, class = void>
struct is_budget_allocator : std::false_type {};
template <class A>
struct is_budget_allocator<
    A, std::void_t<typename A::state,
                   decltype(std::declval<const A&>().begin(std::declval<const model_shape&>(),
                                                           index_t{}, index_t{}, index_t{})),
                   decltype(std::declval<const A&>().head_budgets(
                       std::declval<typename A::state&>(), 0, std::declval<const token_scores&>())),
                   decltype(std::declval<const A&>().layer_budget(
                       std::declval<const typename A::state&>(), 0))>>
    : std::bool_constant<
          std::is_same_v<decltype(std::declval<const A&>().begin(std::declval<const model_shape&>(),
                                                                 index_t{}, index_t{}, index_t{})),
                         typename A::state> &&
          std::is_same_v<decltype(std::declval<const A&>().head_budgets(
                             std::declval<typename A::state&>(), 0, std::declval<const token_scores&>())),
                         std::vector<index_t>>> {};
template <class A>
inline constexpr bool is_budget_allocator_v = is_budget_allocator<A>::value;

// Allocators with a cascade expose current_layer_budgets(state).
template <class A, class = void>
struct has_cascade : std::false_type {};
template <class A>
struct has_cascade<A, std::void_t<decltype(std::declval<const A&>().current_layer_budgets(
                          std::declval<const typename A::state&>()))>> : std::true_type {};

}  // namespace kvtrim
