#pragma once
// One sequence's view of one layer at the end of prefill: K, V and the observation window's
// queries, all after RoPE, in the engine's own memory.
#include <vector>

#include "kvtrim/core/error.hpp"
#include "kvtrim/core/view.hpp"

namespace kvtrim {

template <class T>
struct layer_kv {
  view3<T> keys;           // [kv_head][token][dim], token >= length is padding (never kept)
  view3<T> values;         // [kv_head][token][dim]
  view3<const T> queries;  // [q_head][w][dim]: queries of prompt positions [length - w, length)
  index_t length = 0;      // prompt tokens of this sequence (0 = keys.tokens())
  index_t kv_head_offset = 0;  // global index of keys' first KV head (tensor-parallel shards)

  index_t prompt_length() const { return length > 0 ? length : keys.tokens(); }
  index_t window() const { return queries.tokens(); }
  index_t kv_heads() const { return keys.heads(); }
  index_t group() const { return queries.heads() / keys.heads(); }
};

namespace detail {

// Validates shapes before anything is read or written.
template <class T>
void check_layer(const layer_kv<T>& in, index_t total_kv_heads = 0) {
  check_view(in.keys, "keys");
  check_view(in.values, "values");
  check_view(in.queries, "queries");
  const index_t n = in.prompt_length();
  require(n > 0, "layer_kv: empty prompt (length 0)");
  require(in.values.heads() == in.keys.heads() && in.values.tokens() == in.keys.tokens() &&
              in.values.dim() == in.keys.dim(),
          "layer_kv: values shape [", in.values.heads(), "][", in.values.tokens(), "][",
          in.values.dim(), "] differs from keys shape [", in.keys.heads(), "][", in.keys.tokens(),
          "][", in.keys.dim(), "]");
  require(n <= in.keys.tokens(), "layer_kv: length ", n, " exceeds the views' ", in.keys.tokens(),
          " tokens");
  require(in.queries.dim() == in.keys.dim(), "layer_kv: queries dim ", in.queries.dim(),
          " differs from keys dim ", in.keys.dim());
  require(in.queries.heads() % in.keys.heads() == 0, "layer_kv: ", in.queries.heads(),
          " query heads are not a multiple of ", in.keys.heads(), " KV heads");
  require(in.window() >= 1 && in.window() <= n, "layer_kv: window ", in.window(),
          " must be in [1, prompt length ", n, "]");
  require(in.keys.data() != in.values.data(), "layer_kv: keys and values alias the same memory");
  require(in.kv_head_offset >= 0, "layer_kv: kv_head_offset ", in.kv_head_offset, " < 0");
  if (total_kv_heads > 0)
    require(in.kv_head_offset + in.keys.heads() <= total_kv_heads, "layer_kv: KV heads [",
            in.kv_head_offset, ", ", in.kv_head_offset + in.keys.heads(),
            ") exceed the model's ", total_kv_heads, " KV heads");
}

}  // namespace detail
}  // namespace kvtrim
