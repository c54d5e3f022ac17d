#pragma once
// Random scores: the baseline every scorer must beat. Deterministic given (seed, layer, global KV
// head) and independent of the prompt length, the shard layout and the thread count: each score
// is a counter-based hash of (seed, layer, KV head, token), not a draw from a shared generator.
// A shared row depends on (seed, layer) only, so every tensor-parallel rank produces the same row
// (their sum is that row times the rank count: same order, same decision).
#include <cstdint>
#include <vector>

#include "kvtrim/core/layer_kv.hpp"
#include "kvtrim/core/scores.hpp"
#include "kvtrim/core/shape.hpp"
#include "kvtrim/score/token_scorer.hpp"

namespace kvtrim {

namespace detail {
inline std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
}  // namespace detail

struct random_scores {
  std::uint64_t seed = 0;
  aggregation aggregate = aggregation::per_kv_head;

  template <class T>
  token_scores score(int layer, const layer_kv<T>& in, const std::vector<int>& heads,
                     const model_shape& shape) const {
    check_scoring_input(layer, in, heads, shape);
    token_scores out = make_scores(in, aggregate);
    const index_t c = out.candidates;
    for (index_t r = 0; r < out.rows(); ++r) {
      const std::uint64_t kv =
          out.shared ? ~std::uint64_t{0} : static_cast<std::uint64_t>(in.kv_head_offset + r);
      const std::uint64_t key = detail::splitmix64(
          seed ^ detail::splitmix64((static_cast<std::uint64_t>(layer) << 32) ^ kv));
      float* row = out.row(r);
      for (index_t j = 0; j < c; ++j)  // 24 random bits: uniform in [0, 1), exact in float
        row[j] = static_cast<float>(detail::splitmix64(key + static_cast<std::uint64_t>(j)) >> 40) *
                 (1.0f / 16777216.0f);
    }
    return out;
  }
};

}  // namespace kvtrim
