#pragma once
// GQA aggregation: which query heads score which row of token_scores. Scores are never expanded
// to query-head granularity in the cache; instead the G query heads sharing a KV head are summed
// into that KV head's row (per_kv_head), or every selected head into one row for the whole layer
// (shared, CompressKV). Sums rather than means: token_scores are reducible by addition across
// tensor-parallel ranks, and a per-row constant factor never changes a row's top-k.
#include <vector>

#include "kvtrim/core/error.hpp"
#include "kvtrim/core/layer_kv.hpp"
#include "kvtrim/core/scores.hpp"
#include "kvtrim/core/shape.hpp"
#include "kvtrim/core/view.hpp"

namespace kvtrim {

enum class aggregation {
  per_kv_head,  // one row per KV head: sum over its contributing query heads
  shared,       // one row for the layer: sum over all contributing query heads
};

inline const char* to_string(aggregation a) {
  return a == aggregation::shared ? "shared" : "per_kv_head";
}

// The query heads of one shard that contribute, each with the row it adds into.
struct head_groups {
  index_t group = 0;                 // G
  index_t rows = 0;                  // rows of the token_scores
  std::vector<index_t> local;        // local query-head indices (into in.queries), ascending
  std::vector<index_t> row_of;       // row each of them adds into
  std::vector<index_t> first_of_kv;  // per local KV head: index into `local` of its first head
                                     // (size kv_heads + 1; a KV head with none has an empty range)

  bool shared = false;

  index_t count() const { return static_cast<index_t>(local.size()); }
  // Contributing heads of row r are local[begin(r) .. end(r)) (rows are contiguous runs).
  index_t begin(index_t r) const { return shared ? 0 : first_of_kv[static_cast<size_t>(r)]; }
  index_t end(index_t r) const {
    return shared ? count() : first_of_kv[static_cast<size_t>(r) + 1];
  }
};

// Rejects every bad input before anything is read or written: layer outside the model, views of
// another shape than the model's, query heads that are not exactly the shard's G x KV heads, a
// prompt longer than the context, and head ids outside [0, q_heads) or not strictly ascending.
template <class T>
void check_scoring_input(int layer, const layer_kv<T>& in, const std::vector<int>& heads,
                         const model_shape& shape) {
  shape.validate();
  detail::require(layer >= 0 && layer < shape.layers, "scorer: layer ", layer, " outside [0, ",
          shape.layers, ")");
  detail::check_layer(in, shape.kv_heads);
  detail::require(in.keys.dim() == shape.head_dim, "scorer: head_dim ", in.keys.dim(),
          " differs from the model's ", shape.head_dim);
  detail::require(in.queries.heads() == in.kv_heads() * shape.group(), "scorer: ", in.queries.heads(),
          " query heads in the window view, expected G = ", shape.group(), " x ", in.kv_heads(),
          " KV heads = ", in.kv_heads() * shape.group());
  detail::require(shape.context <= 0 || in.prompt_length() <= shape.context, "scorer: prompt of ",
          in.prompt_length(), " tokens exceeds the model's context of ", shape.context);
  for (size_t i = 0; i < heads.size(); ++i) {
    detail::require(heads[i] >= 0 && heads[i] < shape.q_heads, "scorer: query head ", heads[i],
            " outside [0, ", shape.q_heads, ")");
    if (i > 0 && heads[i] <= heads[i - 1])
      detail::fail("scorer: head ids must be strictly ascending, got ", heads[i - 1], " before ", heads[i]);
  }
}

// Builds the plan for the shard in.kv_head_offset .. + in.kv_heads(). Only heads of the shard
// contribute (local index = global id - kv_head_offset x G). per_kv_head: a KV head none of whose
// G query heads is selected is scored by all G of them, so no KV head is left without scores.
// An empty `heads` list means every head (in both modes).
template <class T>
head_groups group_heads(const layer_kv<T>& in, const std::vector<int>& heads, const model_shape& shape,
                     aggregation agg) {
  head_groups p;
  const index_t G = shape.group(), kv = in.kv_heads();
  const index_t lo = in.kv_head_offset * G, hi = (in.kv_head_offset + kv) * G;
  p.group = G;
  p.shared = agg == aggregation::shared;
  p.rows = agg == aggregation::shared ? 1 : kv;
  std::vector<char> chosen(static_cast<size_t>(kv * G), heads.empty() ? 1 : 0);
  for (int h : heads)
    if (h >= lo && h < hi) chosen[static_cast<size_t>(h - lo)] = 1;
  p.first_of_kv.assign(static_cast<size_t>(kv + 1), 0);
  for (index_t g = 0; g < kv; ++g) {
    p.first_of_kv[static_cast<size_t>(g)] = p.count();
    bool any = false;
    for (index_t j = 0; j < G; ++j) any = any || chosen[static_cast<size_t>(g * G + j)];
    const bool fill = !any && agg == aggregation::per_kv_head;
    for (index_t j = 0; j < G; ++j)
      if (fill || chosen[static_cast<size_t>(g * G + j)]) {
        p.local.push_back(g * G + j);
        p.row_of.push_back(agg == aggregation::shared ? 0 : g);
      }
  }
  p.first_of_kv[static_cast<size_t>(kv)] = p.count();
  return p;
}

}  // namespace kvtrim
