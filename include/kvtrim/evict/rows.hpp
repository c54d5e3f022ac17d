#pragma once
// Row-level helpers shared by the eviction executors: validating a selection against the views it
// will be applied to (all of it, before a single row moves), and copying one [dim] row.
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "kvtrim/core/element.hpp"
#include "kvtrim/core/error.hpp"
#include "kvtrim/core/scores.hpp"
#include "kvtrim/core/view.hpp"

namespace kvtrim {
namespace detail {

// Checks K/V views of one layer and a selection for them: one entry per KV head, each strictly
// ascending, every index in [0, n), and (w > 0) the last w prompt tokens [n - w, n) present.
template <class T>
void check_selection(const selection& sel, const view3<T>& keys, const view3<T>& values,
                     index_t n, index_t w, const char* who) {
  check_view(keys, "keys");
  check_view(values, "values");
  require(values.heads() == keys.heads() && values.tokens() == keys.tokens() &&
              values.dim() == keys.dim(),
          who, ": values shape [", values.heads(), "][", values.tokens(), "][", values.dim(),
          "] differs from keys shape [", keys.heads(), "][", keys.tokens(), "][", keys.dim(), "]");
  require(keys.data() != values.data(), who, ": keys and values alias the same memory");
  require(n >= 1 && n <= keys.tokens(), who, ": prompt length ", n, " must be in [1, ",
          keys.tokens(), "] (the views' tokens)");
  require(w >= 0 && w <= n, who, ": window ", w, " must be in [0, ", n, "]");
  require(sel.keep.size() == static_cast<size_t>(keys.heads()), who, ": selection has ",
          sel.keep.size(), " heads, the views have ", keys.heads());
  for (size_t h = 0; h < sel.keep.size(); ++h) {
    const std::vector<index_t>& k = sel.keep[h];
    const auto len = static_cast<index_t>(k.size());
    for (index_t i = 0; i < len; ++i) {
      const index_t t = k[static_cast<size_t>(i)];
      require(t >= 0 && t < n, who, ": head ", h, " keeps token ", t, ", outside [0, ", n, ")");
      require(i == 0 || t > k[static_cast<size_t>(i - 1)], who, ": head ", h,
              " keep list is not strictly ascending at position ", i, " (", k[static_cast<size_t>(i - 1)],
              " then ", t, ")");
    }
    // Strictly ascending and < n: the last w entries are [n - w, n) iff this one is n - w.
    require(w == 0 || (len >= w && k[static_cast<size_t>(len - w)] == n - w), who, ": head ", h,
            " does not keep the whole window [", n - w, ", ", n, ")");
  }
}

// Copies one row of `dim` elements; memcpy when both rows are contiguous and of the same type.
template <class S, class D>
inline void copy_row(const S* src, index_t src_stride_dim, D* dst, index_t dst_stride_dim,
                     index_t dim) {
  if constexpr (std::is_same_v<std::remove_const_t<S>, D>) {
    if (src_stride_dim == 1 && dst_stride_dim == 1) {
      std::memcpy(dst, src, static_cast<size_t>(dim) * sizeof(D));
      return;
    }
    for (index_t d = 0; d < dim; ++d) dst[d * dst_stride_dim] = src[d * src_stride_dim];
  } else {
    for (index_t d = 0; d < dim; ++d)
      dst[d * dst_stride_dim] = from_float<D>(to_float(src[d * src_stride_dim]));
  }
}

// Kept rows are scattered (a top-k pick), so the hardware prefetcher does not see them coming:
// executors ask for the source row `row_prefetch_distance` positions ahead (measured ~20% faster
// on 512-byte rows, more on 128-byte ones).
constexpr index_t row_prefetch_distance = 16;
template <class T>
inline void prefetch_row(const T* row, index_t dim, index_t stride_dim) {
#if defined(__GNUC__)
  const index_t span = (dim - 1) * stride_dim + 1;  // elements from the first to the last
  if (stride_dim == 1 || span * index_t(sizeof(T)) <= 1024)
    for (index_t e = 0; e < span; e += 64 / index_t(sizeof(T))) __builtin_prefetch(row + e, 0, 3);
#else
  (void)row, (void)dim, (void)stride_dim;
#endif
}

// [first, last] byte addresses a view touches (conservative: a strided view may skip bytes).
template <class T>
inline std::pair<std::uintptr_t, std::uintptr_t> byte_span(const view3<T>& v) {
  const auto first = reinterpret_cast<std::uintptr_t>(v.data());
  const index_t last_elem = (v.heads() - 1) * v.stride_head() +
                            (v.tokens() > 0 ? v.tokens() - 1 : 0) * v.stride_token() +
                            (v.dim() - 1) * v.stride_dim();
  return {first, first + static_cast<std::uintptr_t>(last_elem + 1) * sizeof(T) - 1};
}
template <class A, class B>
inline bool spans_overlap(const view3<A>& a, const view3<B>& b) {
  const auto x = byte_span(a), y = byte_span(b);
  return x.first <= y.second && y.first <= x.second;
}

}  // namespace detail
}  // namespace kvtrim
