#pragma once
// Non-owning strided views of the host engine's memory. kvtrim never allocates KV memory of its
// own: it reads and compacts the engine's K/V rows where they are, through these views.
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "kvtrim/core/element.hpp"
#include "kvtrim/core/error.hpp"
#include "kvtrim/core/host_device.hpp"  // accessors usable in CUDA kernels too


namespace kvtrim {

using index_t = std::int64_t;

// A 3-D strided view [head][token][dim]; strides are in elements. Used for one layer's K or V
// (`[kv_head][token][dim]`) and for the observation window's queries (`[q_head][w][dim]`).
// Any strides work, so an engine's `[token][head][dim]` layout needs no copy (see token_major).
template <class T>
class view3 {
  static_assert(is_element_v<T>, "kvtrim views hold float, kvtrim::half or kvtrim::bfloat16");

 public:
  using element_type = T;

  view3() = default;
  KVTRIM_HD view3(T* data, index_t heads, index_t tokens, index_t dim, index_t stride_head,
        index_t stride_token, index_t stride_dim = 1)
      : data_(data), heads_(heads), tokens_(tokens), dim_(dim), sh_(stride_head),
        st_(stride_token), sd_(stride_dim) {}

  // Contiguous `[head][token][dim]`.
  static view3 head_major(T* data, index_t heads, index_t tokens, index_t dim) {
    return view3(data, heads, tokens, dim, tokens * dim, dim, 1);
  }
  // Contiguous `[token][head][dim]` (the layout of most engines' prefill buffers).
  static view3 token_major(T* data, index_t heads, index_t tokens, index_t dim) {
    return view3(data, heads, tokens, dim, dim, heads * dim, 1);
  }

  // A const view of the same memory.
  KVTRIM_HD operator view3<const T>() const {  // NOLINT(google-explicit-constructor): like T* -> const T*
    return view3<const T>(data_, heads_, tokens_, dim_, sh_, st_, sd_);
  }

  KVTRIM_HD T* data() const { return data_; }
  KVTRIM_HD index_t heads() const { return heads_; }
  KVTRIM_HD index_t tokens() const { return tokens_; }
  KVTRIM_HD index_t dim() const { return dim_; }
  KVTRIM_HD index_t stride_head() const { return sh_; }
  KVTRIM_HD index_t stride_token() const { return st_; }
  KVTRIM_HD index_t stride_dim() const { return sd_; }
  KVTRIM_HD bool empty() const { return data_ == nullptr; }

  KVTRIM_HD T* row(index_t head, index_t token) const { return data_ + head * sh_ + token * st_; }
  KVTRIM_HD T& operator()(index_t head, index_t token, index_t d) const { return row(head, token)[d * sd_]; }

  // The first `n` tokens of every head (same memory).
  KVTRIM_HD view3 first_tokens(index_t n) const { return view3(data_, heads_, n, dim_, sh_, st_, sd_); }
  // Tokens [begin, begin + n) of every head.
  KVTRIM_HD view3 token_range(index_t begin, index_t n) const {
    return view3(data_ + begin * st_, heads_, n, dim_, sh_, st_, sd_);
  }
  // Heads [begin, begin + n) (tensor-parallel shards, GQA groups).
  KVTRIM_HD view3 head_range(index_t begin, index_t n) const {
    return view3(data_ + begin * sh_, n, tokens_, dim_, sh_, st_, sd_);
  }

 private:
  T* data_ = nullptr;
  index_t heads_ = 0, tokens_ = 0, dim_ = 0;
  index_t sh_ = 0, st_ = 0, sd_ = 0;
};

namespace detail {

// Strides must be positive and the (head, token, dim) -> offset map injective: a view whose rows
// overlap would make in-place compaction overwrite rows it still has to read.
template <class T>
void check_view(const view3<T>& v, const char* name) {
  require(v.data() != nullptr, name, ": null data pointer");
  require(v.heads() > 0 && v.tokens() >= 0 && v.dim() > 0, name, ": shape [", v.heads(), "][",
          v.tokens(), "][", v.dim(), "] must have heads > 0, tokens >= 0, dim > 0");
  require(v.stride_head() > 0 && v.stride_token() > 0 && v.stride_dim() > 0, name, ": strides (",
          v.stride_head(), ", ", v.stride_token(), ", ", v.stride_dim(), ") must all be > 0");
  // Sort the three (extent, stride) pairs by stride; each stride must clear the span of the
  // smaller ones, else two indices map to the same element.
  index_t ext[3] = {v.heads(), v.tokens(), v.dim()};
  index_t str[3] = {v.stride_head(), v.stride_token(), v.stride_dim()};
  for (int i = 0; i < 3; ++i)
    for (int j = i + 1; j < 3; ++j)
      if (str[j] < str[i] || (str[j] == str[i] && ext[j] < ext[i])) {
        std::swap(str[i], str[j]);
        std::swap(ext[i], ext[j]);
      }
  index_t span = 1;  // elements covered by the smaller dimensions
  for (int i = 0; i < 3; ++i) {
    if (ext[i] <= 1) continue;
    require(str[i] >= span, name, ": strides (", v.stride_head(), ", ", v.stride_token(), ", ",
            v.stride_dim(), ") make rows overlap for shape [", v.heads(), "][", v.tokens(), "][",
            v.dim(), "]");
    span = str[i] * (ext[i] - 1) + span;
  }
}

}  // namespace detail
}  // namespace kvtrim
