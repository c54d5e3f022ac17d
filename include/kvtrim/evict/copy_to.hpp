#pragma once
// The copying eviction executor: each KV head's kept rows are copied, in order, to the front of
// the same head of caller-supplied destination views `[kv_head][capacity][dim]` (for an engine
// that keeps its compressed cache apart from the prefill buffers). The source is only read;
// destination rows at or past a head's new length are never written.
#include <algorithm>
#include <type_traits>
#include <vector>

#include "kvtrim/core/error.hpp"
#include "kvtrim/core/layer_kv.hpp"
#include "kvtrim/core/scores.hpp"
#include "kvtrim/core/view.hpp"
#include "kvtrim/evict/rows.hpp"

namespace kvtrim {

template <class T>
class copy_to {
  static_assert(!std::is_const_v<T>, "copy_to writes its destination: T must not be const");

 public:
  // Destination K and V, [kv_head][capacity][dim], any strides.
  copy_to(view3<T> keys, view3<T> values) : keys_(keys), values_(values) {
    detail::check_view(keys_, "copy_to destination keys");
    detail::check_view(values_, "copy_to destination values");
    detail::require(values_.heads() == keys_.heads() && values_.tokens() == keys_.tokens() &&
                        values_.dim() == keys_.dim(),
                    "copy_to: destination values shape [", values_.heads(), "][",
                    values_.tokens(), "][", values_.dim(), "] differs from keys shape [",
                    keys_.heads(), "][", keys_.tokens(), "][", keys_.dim(), "]");
    detail::require(keys_.data() != values_.data(),
                    "copy_to: destination keys and values alias the same memory");
  }

  const view3<T>& keys() const { return keys_; }
  const view3<T>& values() const { return values_; }
  index_t capacity() const { return keys_.tokens(); }

  // Copies sel's rows of kv's K/V (element type S: same as T, or converted through float) and
  // returns the new per-head lengths. Validates everything first: the selection as
  // compact_in_place does, destination heads/dim equal to the source's, each head's kept count
  // <= capacity(), and no byte of the destination inside the source's address span.
  template <class S>
  std::vector<index_t> apply(const selection& sel, const layer_kv<S>& kv) const {
    const index_t n = kv.prompt_length();
    const index_t w = kv.queries.empty() ? 0 : kv.window();
    detail::check_selection(sel, kv.keys, kv.values, n, w, "copy_to");
    detail::require(keys_.heads() == kv.keys.heads(), "copy_to: destination has ", keys_.heads(),
                    " KV heads, the source ", kv.keys.heads());
    detail::require(keys_.dim() == kv.keys.dim(), "copy_to: destination dim ", keys_.dim(),
                    " differs from the source's ", kv.keys.dim());
    for (size_t h = 0; h < sel.keep.size(); ++h)
      detail::require(static_cast<index_t>(sel.keep[h].size()) <= capacity(), "copy_to: head ", h,
                      " keeps ", sel.keep[h].size(), " tokens, destination capacity is ",
                      capacity());
    // Overlapping source and destination would read rows already overwritten.
    for (const view3<T>* d : {&keys_, &values_})
      detail::require(!detail::spans_overlap(*d, kv.keys) && !detail::spans_overlap(*d, kv.values),
                      "copy_to: destination memory overlaps the source K/V");

    const index_t items = 2 * kv.keys.heads();
    index_t rows = 0;
    for (const auto& k : sel.keep) rows += static_cast<index_t>(k.size());
    const bool parallel = rows * kv.keys.dim() * index_t(sizeof(T)) >= (index_t(1) << 20);  // as compact_in_place
    (void)parallel;
#if defined(_OPENMP)
#pragma omp parallel for schedule(dynamic, 1) if (parallel)
#endif
    for (index_t it = 0; it < items; ++it) {
      const view3<S>& src = (it % 2 == 0) ? kv.keys : kv.values;
      const view3<T>& dst = (it % 2 == 0) ? keys_ : values_;
      const index_t h = it / 2;
      const std::vector<index_t>& keep = sel.keep[static_cast<size_t>(h)];
      const auto len = static_cast<index_t>(keep.size());
      for (index_t i = 0; i < len; ++i) {
        if (i + detail::row_prefetch_distance < len)
          detail::prefetch_row(src.row(h, keep[static_cast<size_t>(i + detail::row_prefetch_distance)]),
                               src.dim(), src.stride_dim());
        detail::copy_row(src.row(h, keep[static_cast<size_t>(i)]), src.stride_dim(), dst.row(h, i),
                         dst.stride_dim(), dst.dim());
      }
    }
    return sel.lengths();
  }

 private:
  view3<T> keys_, values_;
};

}  // namespace kvtrim
