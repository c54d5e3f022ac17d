#pragma once
// The observation window of decode-time compression: per layer, the queries of the last w decode
// steps (after RoPE), oldest first, as the [q_head][w][dim] view every window scorer reads as
// layer_kv::queries. kvpress's DecodingPress keeps the same buffer (its query buffer of
// compression_interval hidden states); here it holds queries, not hidden states, because the
// engine has them at hand and the scorers read nothing else.
//
// Contract:
//   query_ring<T> ring(layers, q_heads, w, head_dim);
//   ring.seed(l, kv.queries);     // optional: the prefill's window queries, so it starts full
//   ring.push(l, q);              // each decode step, after layer l's RoPE: q = [q_head][head_dim]
//   ring.queries(l)               // [q_head][size(l)][dim], oldest first; valid until the next push
// Every (layer, q_head) row lives twice (slots s and s + w), so the window is one strided view at
// any rotation: push is O(q_heads x dim), reading copies nothing. Bad input throws kvtrim::error
// before anything is written.
#include <algorithm>
#include <vector>

#include "kvtrim/core/error.hpp"
#include "kvtrim/core/view.hpp"

namespace kvtrim {

template <class T = float>
class query_ring {
 public:
  query_ring() = default;
  query_ring(index_t layers, index_t q_heads, index_t window, index_t dim)
      : layers_(layers), heads_(q_heads), w_(window), dim_(dim) {
    detail::require(layers >= 1 && q_heads >= 1 && window >= 1 && dim >= 1, "query_ring: layers ", layers,
                    ", q_heads ", q_heads, ", window ", window, ", dim ", dim, " must all be >= 1");
    data_.assign(static_cast<size_t>(layers * q_heads * 2 * window * dim), T{});
    next_.assign(static_cast<size_t>(layers), 0);
    size_.assign(static_cast<size_t>(layers), 0);
  }

  index_t layers() const { return layers_; }
  index_t q_heads() const { return heads_; }
  index_t window() const { return w_; }  // capacity: queries kept per layer
  index_t dim() const { return dim_; }
  index_t size(int layer) const { return size_[checked(layer)]; }
  bool full(int layer) const { return size(layer) == w_; }

  // Appends one decode step's queries of `layer`: q_heads rows of dim values, head h at
  // q + h * head_stride (0 = dim: contiguous). The oldest is dropped when the ring is full.
  void push(int layer, const T* q, index_t head_stride = 0) {
    const size_t l = checked(layer);
    detail::require(q != nullptr, "query_ring::push: null queries for layer ", layer);
    const index_t hs = head_stride == 0 ? dim_ : head_stride;
    detail::require(hs >= dim_, "query_ring::push: head stride ", hs, " < dim ", dim_);
    const index_t s = next_[l];
    for (index_t h = 0; h < heads_; ++h)
      for (index_t copy : {s, s + w_}) std::copy_n(q + h * hs, dim_, slot(l, h, copy));
    next_[l] = (s + 1) % w_;
    size_[l] = std::min(size_[l] + 1, w_);
  }

  // Pushes every token of `window` ([q_head][tokens][dim], any strides) in order: the prefill's
  // last queries, so the first decode-time compression already has a full window.
  void seed(int layer, const view3<const T>& window) {
    checked(layer);
    detail::check_view(window, "query_ring::seed");
    detail::require(window.heads() == heads_ && window.dim() == dim_, "query_ring::seed: queries [",
                    window.heads(), "][", window.tokens(), "][", window.dim(), "], expected [", heads_,
                    "][*][", dim_, "]");
    std::vector<T> step(static_cast<size_t>(heads_ * dim_));
    for (index_t t = std::max<index_t>(0, window.tokens() - w_); t < window.tokens(); ++t) {
      for (index_t h = 0; h < heads_; ++h)
        for (index_t d = 0; d < dim_; ++d) step[static_cast<size_t>(h * dim_ + d)] = window(h, t, d);
      push(layer, step.data());
    }
  }

  // The held queries of `layer`, oldest first: [q_head][size(layer)][dim].
  view3<const T> queries(int layer) const {
    const size_t l = checked(layer);
    const index_t start = (next_[l] + w_ - size_[l]) % w_;
    return view3<const T>(data_.data() + base(l) + start * dim_, heads_, size_[l], dim_, 2 * w_ * dim_, dim_, 1);
  }

  void clear() {
    std::fill(next_.begin(), next_.end(), 0);
    std::fill(size_.begin(), size_.end(), 0);
  }

 private:
  size_t checked(int layer) const {
    detail::require(layer >= 0 && layer < layers_, "query_ring: layer ", layer, " outside [0, ", layers_, ")");
    return static_cast<size_t>(layer);
  }
  size_t base(size_t l) const { return l * static_cast<size_t>(heads_ * 2 * w_ * dim_); }
  T* slot(size_t l, index_t h, index_t s) {
    return data_.data() + base(l) + static_cast<size_t>((h * 2 * w_ + s) * dim_);
  }

  index_t layers_ = 0, heads_ = 0, w_ = 0, dim_ = 0;
  std::vector<T> data_;  // [layer][q_head][2w][dim]
  std::vector<index_t> next_, size_;
};

}  // namespace kvtrim
