#pragma once
// One sequence's view of one layer at the end of prefill: K, V and the observation window's
// queries, all after RoPE, in the engine's own memory.
#include <cmath>
#include <utility>
#include <vector>

#include "kvtrim/core/error.hpp"
#include "kvtrim/core/view.hpp"

namespace kvtrim {

// The rotary embedding a model applies to Q and K, for scorers that reason about future query
// positions (expected_attention). Pairs (i, i + d/2) rotate by pos * base^(-2i/d) ("halves": the
// Hugging Face / Llama layout, which the reference host uses) or (2i, 2i + 1) ("adjacent":
// llama.cpp's "normal" layout of unpermuted GGUF weights). `inv_freq`, when set, overrides the
// frequencies (d/2 of them: RoPE scaling of Llama 3 and others).
struct rope_spec {
  enum class pairing { halves, adjacent };
  double base = 0.0;  // 0 = not given
  pairing pairs = pairing::halves;
  const double* inv_freq = nullptr;
  bool given() const { return base > 0.0 || inv_freq != nullptr; }
  double frequency(index_t i, index_t dim) const {
    return inv_freq ? inv_freq[i] : std::pow(base, -2.0 * static_cast<double>(i) / static_cast<double>(dim));
  }
  // The two dims that pair i in [0, dim/2) rotates together.
  std::pair<index_t, index_t> pair_dims(index_t i, index_t dim) const {
    return pairs == pairing::halves ? std::pair<index_t, index_t>{i, i + dim / 2}
                                    : std::pair<index_t, index_t>{2 * i, 2 * i + 1};
  }
};

template <class T>
struct layer_kv {
  view3<T> keys;           // [kv_head][token][dim], token >= length is padding (never kept)
  view3<T> values;         // [kv_head][token][dim]
  view3<const T> queries;  // [q_head][w][dim]: queries of prompt positions [length - w, length)
  index_t length = 0;      // prompt tokens of this sequence (0 = keys.tokens())
  index_t kv_head_offset = 0;  // global index of keys' first KV head (tensor-parallel shards)

  // Optional inputs, read only by the methods whose method_info asks for them (the others never
  // look); all cover the same query heads as `queries` (the shard's G x KV heads).
  //   out_proj (needs_out_proj, CriticalKV): the attention output projection W_o per query head,
  //     [q_head][hidden][head_dim] with (i, k, d) = W_o[k][i * head_dim + d], W_o being the
  //     [hidden][q_heads * head_dim] o_proj weight: for a row-major o_proj, heads stride
  //     head_dim, "tokens" stride q_heads * head_dim, dim stride 1 -- a view, no copy.
  //   attention_sums (needs_attention_sums, H2O): [q_head][n][1], column sums of the prefill
  //     attention, sum over every prompt query i >= j of softmax(q_i K^T / sqrt(d))_j.
  //   prompt_queries (needs_prompt_queries, expected_attention): every prompt position's query
  //     BEFORE RoPE, [q_head][n][head_dim]; with `rope`, the rotation the model applies.
  view3<const T> out_proj;
  view3<const float> attention_sums;
  view3<const T> prompt_queries;
  rope_spec rope;

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
