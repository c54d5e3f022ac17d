#pragma once
// The eviction-executor role: how the kept rows move.
//
// Contract (checked by compressor<...> with static_assert), for T = float, half, bfloat16:
//   template <class T> std::vector<index_t> apply(const selection& sel, const layer_kv<T>& kv) const;
// sel.keep[h] lists, strictly ascending, the prompt tokens local KV head h keeps (the window
// [n - w, n) last); apply validates everything before writing anything (bad input: kvtrim::error,
// views untouched), leaves row i of head h holding token sel.keep[h][i] for i < len[h], writes
// no row at or past len[h], and returns len (= sel.lengths()).
//
// Implementations: compact_in_place (in the engine's K/V); copy_to (into caller-supplied views).
#include <type_traits>
#include <utility>
#include <vector>

#include "kvtrim/core/layer_kv.hpp"
#include "kvtrim/core/scores.hpp"

namespace kvtrim {

template <class E, class T, class = void>
struct is_executor_for : std::false_type {};
template <class E, class T>
struct is_executor_for<E, T, std::void_t<decltype(std::declval<const E&>().apply(
                                 std::declval<const selection&>(), std::declval<const layer_kv<T>&>()))>>
    : std::is_same<decltype(std::declval<const E&>().apply(std::declval<const selection&>(),
                                                           std::declval<const layer_kv<T>&>())),
                   std::vector<index_t>> {};
template <class E>
inline constexpr bool is_executor_v = is_executor_for<E, float>::value &&
                                      is_executor_for<E, half>::value &&
                                      is_executor_for<E, bfloat16>::value;

}  // namespace kvtrim
