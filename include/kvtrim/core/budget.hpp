#pragma once
// The budget B: average retained prompt tokens per KV head per layer, observation window included.
// Retained bytes = B x layers x kv_heads x head_dim x 2 x bytes_per_value, so every method at the
// same B holds the same bytes. A ratio (fraction of the prompt kept) is the other accepted unit.
#include <cmath>

#include "kvtrim/core/error.hpp"
#include "kvtrim/core/view.hpp"

namespace kvtrim {

class budget {
 public:
  static budget tokens(index_t b) {
    detail::require(b > 0, "budget: ", b, " tokens must be > 0");
    budget r;
    r.tokens_ = b;
    return r;
  }
  static budget ratio(double r) {
    detail::require(r > 0.0 && r <= 1.0, "budget: ratio ", r, " must be in (0, 1]");
    budget x;
    x.ratio_ = r;
    return x;
  }

  bool is_ratio() const { return ratio_ > 0.0; }
  double ratio_value() const { return ratio_; }
  index_t token_value() const { return tokens_; }

  // B in tokens for a prompt of n tokens; a ratio rounds to the nearest token, at least 1.
  index_t resolve(index_t n) const {
    if (!is_ratio()) return tokens_;
    const auto b = static_cast<index_t>(std::llround(ratio_ * static_cast<double>(n)));
    return b < 1 ? 1 : b;
  }

 private:
  budget() = default;
  index_t tokens_ = 0;
  double ratio_ = 0.0;
};

// Bytes a cache of `tokens_per_head` summed over all (layer, KV head) pairs holds (K and V).
inline double kv_bytes(double tokens_summed_over_heads, int head_dim, int bytes_per_value) {
  return tokens_summed_over_heads * head_dim * 2.0 * bytes_per_value;
}

}  // namespace kvtrim
