#pragma once
// The in-place eviction executor: each KV head's kept rows move to the front of that head's rows
// in the engine's own K and V memory, original order preserved, and the new per-head lengths are
// returned. Rows at or past a head's new length are never written (the engine frees or reuses
// them). Works through any strides: head-major, token-major [t][h][d], padded.
// With rerotate_keys, every kept key is also re-rotated (evict/rerotate.hpp): row i of a head
// keeping len tokens holds token keep[i]'s key as if computed at position n - len + i (the kept
// keys packed contiguously up to the prompt's end); values are never touched.
#include <type_traits>
#include <vector>

#include "kvtrim/core/error.hpp"
#include "kvtrim/core/layer_kv.hpp"
#include "kvtrim/core/scores.hpp"
#include "kvtrim/core/view.hpp"
#include "kvtrim/evict/rerotate.hpp"
#include "kvtrim/evict/rows.hpp"

namespace kvtrim {

struct compact_in_place {
  bool rerotate_keys = false;  // needs kv.rope (checked before anything moves)

  // Validates everything first (views, selection sorted strictly ascending, indices < n, the last
  // w = kv.window() prompt tokens present; no window check when kv.queries is empty; the RoPE
  // when re-rotating), then moves rows. Throws kvtrim::error with the views untouched on any bad
  // input.
  template <class T>
  std::vector<index_t> apply(const selection& sel, const layer_kv<T>& kv) const {
    static_assert(!std::is_const_v<T>, "compact_in_place writes the K/V views: T must not be const");
    const index_t n = kv.prompt_length();
    const index_t w = kv.queries.empty() ? 0 : kv.window();
    detail::check_selection(sel, kv.keys, kv.values, n, w, "compact_in_place");
    const std::vector<double> freq =
        rerotate_keys ? detail::rope_frequencies(kv.rope, kv.keys.dim(), "compact_in_place") : std::vector<double>{};

    // K and V of each head are independent work items: 2H items balance better over the
    // threads than H (SmolLM2's 3 KV heads on 2 threads would leave one idle a third of the time).
    const index_t items = 2 * kv.keys.heads();
    index_t rows = 0;
    for (const auto& k : sel.keep) rows += static_cast<index_t>(k.size());
    // Threads only pay past ~1 MiB of rows (~0.1 ms): waking a second thread costs microseconds
    // on an idle machine and a scheduler slice (~10 ms) on a busy one.
    const bool parallel = rows * kv.keys.dim() * index_t(sizeof(T)) >= (index_t(1) << 20);
    (void)parallel;
#if defined(_OPENMP)
#pragma omp parallel for schedule(dynamic, 1) if (parallel)
#endif
    for (index_t it = 0; it < items; ++it) {
      const view3<T>& v = (it % 2 == 0) ? kv.keys : kv.values;
      const index_t h = it / 2;
      const std::vector<index_t>& keep = sel.keep[static_cast<size_t>(h)];
      const auto len = static_cast<index_t>(keep.size());
      // keep[i] >= i (strictly ascending from >= 0), so a forward pass never overwrites a row it
      // has still to read. Once keep[i] != i it stays so: the in-place prefix is skipped.
      index_t i = 0;
      while (i < len && keep[static_cast<size_t>(i)] == i) ++i;
      for (; i < len; ++i) {
        if (i + detail::row_prefetch_distance < len)
          detail::prefetch_row(v.row(h, keep[static_cast<size_t>(i + detail::row_prefetch_distance)]),
                               v.dim(), v.stride_dim());
        detail::copy_row(v.row(h, keep[static_cast<size_t>(i)]), v.stride_dim(), v.row(h, i),
                         v.stride_dim(), v.dim());
      }
      if (rerotate_keys && it % 2 == 0)  // every kept row, the unmoved prefix too (delta n - len)
        for (i = 0; i < len; ++i)
          if (const index_t delta = n - len + i - keep[static_cast<size_t>(i)]; delta != 0)
            detail::rotate_row(v.row(h, i), v.stride_dim(), v.dim(), kv.rope, freq, delta);
    }
    return sel.lengths();
  }
};

}  // namespace kvtrim
