#pragma once
// A batch of sequences with different prompt lengths in one call. Engines pad a batch to its
// longest prompt; kvtrim slices each sequence's own [0, length) tokens, so padding is never
// scored or kept, and returns each sequence's new per-head lengths.
#include <vector>

#include "kvtrim/core/layer_kv.hpp"
#include "kvtrim/core/view.hpp"

namespace kvtrim {

template <class T>
struct batch_layer_kv {
  view3<T> keys;              // sequence 0's [kv_head][padded_token][dim]
  view3<T> values;            // sequence 0's
  view3<const T> queries;     // sequence 0's [q_head][w][dim] (each sequence's own last w positions)
  index_t kv_stride_seq = 0;  // elements from one sequence's K (and V) to the next's
  index_t q_stride_seq = 0;   // elements from one sequence's window queries to the next's
  std::vector<index_t> lengths;  // prompt tokens of each sequence (<= keys.tokens())
  index_t kv_head_offset = 0;

  index_t size() const { return static_cast<index_t>(lengths.size()); }

  layer_kv<T> sequence(index_t s) const {
    detail::require(s >= 0 && s < size(), "batch: sequence ", s, " outside [0, ", size(), ")");
    detail::require(kv_stride_seq > 0 || size() == 1, "batch: kv_stride_seq must be > 0");
    detail::require(q_stride_seq > 0 || size() == 1, "batch: q_stride_seq must be > 0");
    auto shift = [](auto v, index_t off) {
      using V = decltype(v);
      return V(v.data() + off, v.heads(), v.tokens(), v.dim(), v.stride_head(), v.stride_token(),
               v.stride_dim());
    };
    layer_kv<T> one;
    one.keys = shift(keys, s * kv_stride_seq);
    one.values = shift(values, s * kv_stride_seq);
    one.queries = shift(queries, s * q_stride_seq);
    one.length = lengths[static_cast<size_t>(s)];
    one.kv_head_offset = kv_head_offset;
    return one;
  }
};

namespace detail {
// Every sequence's views, validated before any is touched, so a bad one leaves the batch unchanged.
template <class T>
std::vector<layer_kv<T>> batch_views(const batch_layer_kv<T>& batch) {
  std::vector<layer_kv<T>> seqs;
  for (index_t s = 0; s < batch.size(); ++s) {
    seqs.push_back(batch.sequence(s));
    check_layer(seqs.back());
  }
  return seqs;
}
}  // namespace detail

// Compresses one layer of every sequence of a batch: plans[s] is sequence s's plan (from
// begin(lengths[s])). Returns [sequence][kv_head] new lengths. `Compressor` is a
// kvtrim::compressor (its compress_layer takes the plan).
template <class Compressor, class Plan, class T>
std::vector<std::vector<index_t>> compress_batch(const Compressor& c, std::vector<Plan>& plans,
                                                 int layer, const batch_layer_kv<T>& batch) {
  detail::require(static_cast<index_t>(plans.size()) == batch.size(), "batch: ", plans.size(),
                  " plans for ", batch.size(), " sequences");
  const std::vector<layer_kv<T>> seqs = detail::batch_views(batch);
  std::vector<std::vector<index_t>> out;
  out.reserve(seqs.size());
  for (size_t s = 0; s < seqs.size(); ++s) out.push_back(c.compress_layer(plans[s], layer, seqs[s]));
  return out;
}

}  // namespace kvtrim
