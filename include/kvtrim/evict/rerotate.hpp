#pragma once
// Key re-rotation after eviction (kvpress's KeyRerotationPress, the SinkCache of transformers,
// FINCH): the len kept keys of a head are packed at contiguous positions ending where the prompt
// ends, n - len, ..., n - 1; a key that sat at prompt position p and now sits in row i turns by
// RoPE through (n - len + i) - p. RoPE rotations compose (R(a) = R(a - p) R(p)), so this needs
// only the post-RoPE key and the model's frequencies (layer_kv::rope), not the pre-RoPE key.
//
// Why aligned to the end: the window keeps its positions (delta 0) and the engine's next query
// keeps its own (n), so no host change. Attention under RoPE depends only on q - k distances, so
// this is exactly kvpress's choice (keys at 0..len-1, decoding from len) for equal head lengths,
// and it extends to head-wise budgets, where no single decode position could fit every head.
#include <cmath>
#include <vector>

#include "kvtrim/core/element.hpp"
#include "kvtrim/core/error.hpp"
#include "kvtrim/core/layer_kv.hpp"

namespace kvtrim {
namespace detail {

// The d/2 RoPE frequencies of a layer, checked (re-rotation without them would silently leave
// keys at their old positions).
inline std::vector<double> rope_frequencies(const rope_spec& rope, index_t dim, const char* who) {
  require(rope.given(), who, ": re-rotating keys needs the model's RoPE (layer_kv::rope: base or inv_freq)");
  require(dim % 2 == 0, who, ": re-rotating keys needs an even head_dim, not ", dim);
  std::vector<double> f(static_cast<size_t>(dim / 2));
  for (index_t i = 0; i < dim / 2; ++i) {
    f[static_cast<size_t>(i)] = rope.frequency(i, dim);
    require(std::isfinite(f[static_cast<size_t>(i)]), who, ": RoPE frequency ", i, " is not finite");
  }
  return f;
}

// Rotates one [dim] key row by `delta` positions: each of the rope's pairs (a, b) by delta * f_i
// (freq: rope_frequencies). Angles in double (delta * f reaches 1e5 radians at long contexts),
// the row in float.
template <class T>
void rotate_row(T* row, index_t stride_dim, index_t dim, const rope_spec& rope,
                const std::vector<double>& freq, index_t delta) {
  for (index_t i = 0; i < dim / 2; ++i) {
    const auto [ia, ib] = rope.pair_dims(i, dim);
    const double angle = static_cast<double>(delta) * freq[static_cast<size_t>(i)];
    const auto c = static_cast<float>(std::cos(angle)), s = static_cast<float>(std::sin(angle));
    const float a = to_float(row[ia * stride_dim]), b = to_float(row[ib * stride_dim]);
    row[ia * stride_dim] = from_float<T>(a * c - b * s);
    row[ib * stride_dim] = from_float<T>(a * s + b * c);
  }
}

}  // namespace detail
}  // namespace kvtrim
