#pragma once
// What kvtrim needs to know about a model: layer and head counts (for GQA groups and profiles).
#include "kvtrim/core/error.hpp"
#include "kvtrim/core/view.hpp"

namespace kvtrim {

// The most heads (layers x query heads) a shape may have: far above any real model (~16 K), and
// small enough that per-head tables of a crafted shape (a profile header, a CLI flag) cannot
// exhaust memory. Each of layers, q_heads and kv_heads is bounded by it too.
constexpr int max_shape_heads = 1 << 20;

namespace detail {
// layers x q_heads within max_shape_heads (each > 0 is checked by the caller).
inline bool shape_product_ok(long long layers, long long q_heads) {
  return layers > 0 && q_heads > 0 && layers <= max_shape_heads && q_heads <= max_shape_heads &&
         layers * q_heads <= max_shape_heads;
}
}  // namespace detail

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
    detail::require(detail::shape_product_ok(layers, q_heads), "model_shape: layers x q_heads = ", layers,
                    " x ", q_heads, " exceeds ", max_shape_heads, " heads");
    detail::require(head_dim > 0, "model_shape: head_dim = ", head_dim, " must be > 0");
    detail::require(context >= 0, "model_shape: context = ", context, " must be >= 0");
  }
  friend bool operator==(const model_shape& a, const model_shape& b) {
    return a.layers == b.layers && a.q_heads == b.q_heads && a.kv_heads == b.kv_heads &&
           a.head_dim == b.head_dim;
  }
};

}  // namespace kvtrim
