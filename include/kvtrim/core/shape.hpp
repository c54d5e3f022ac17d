#pragma once
// What kvtrim needs to know about a model: layer and head counts (for GQA groups and profiles).
#include "kvtrim/core/error.hpp"
#include "kvtrim/core/view.hpp"

namespace kvtrim {

struct model_shape {
  int layers = 0;
  int q_heads = 0;
  int kv_heads = 0;
  int head_dim = 0;
  index_t context = 0;  // 0 = unknown / unlimited

  // Query heads per KV head (GQA group size G).
  int group() const { return q_heads / kv_heads; }

  void validate() const {
    detail::require(layers > 0, "model_shape: layers = ", layers, " must be > 0");
    detail::require(kv_heads > 0, "model_shape: kv_heads = ", kv_heads, " must be > 0");
    detail::require(q_heads > 0 && q_heads % kv_heads == 0, "model_shape: q_heads = ", q_heads,
                    " must be a positive multiple of kv_heads = ", kv_heads);
    detail::require(head_dim > 0, "model_shape: head_dim = ", head_dim, " must be > 0");
    detail::require(context >= 0, "model_shape: context = ", context, " must be >= 0");
  }
  friend bool operator==(const model_shape& a, const model_shape& b) {
    return a.layers == b.layers && a.q_heads == b.q_heads && a.kv_heads == b.kv_heads &&
           a.head_dim == b.head_dim;
  }
};

}  // namespace kvtrim
