#pragma once
// Head selector: CompressKV's semantic retrieval heads. Per layer, the k query heads with the
// highest offline score (a profile's per-head semantic-retrieval scores, or the order of a
// published <model>_head_idx.json) score tokens for the whole layer. CompressKV uses k = 4.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <utility>
#include <vector>

#include "kvtrim/core/error.hpp"
#include "kvtrim/core/shape.hpp"

namespace kvtrim {

class retrieval_heads {
 public:
  static constexpr int default_k = 4;  // CompressKV: top-4 heads per layer

  // scores[layer][q_head]; its shape is checked against the model in heads(), where the model
  // is known. NaN scores are rejected here (they have no order).
  explicit retrieval_heads(std::vector<std::vector<double>> scores, int k = default_k)
      : scores_(std::move(scores)), k_(k) {
    detail::require(k_ >= 1, "retrieval_heads: k = ", k_, " must be >= 1");
    for (size_t l = 0; l < scores_.size(); ++l)
      for (size_t h = 0; h < scores_[l].size(); ++h)
        detail::require(!std::isnan(scores_[l][h]), "retrieval_heads: score of layer ", l, " head ",
                        h, " is NaN");
  }

  int k() const { return k_; }
  const std::vector<std::vector<double>>& scores() const { return scores_; }

  // The k best query heads of `layer` (ties to the lower head id), ascending.
  std::vector<int> heads(int layer, const model_shape& shape) const {
    shape.validate();
    detail::require(layer >= 0 && layer < shape.layers, "retrieval_heads: layer ", layer,
                    " outside [0, ", shape.layers, ")");
    detail::require(k_ <= shape.q_heads, "retrieval_heads: k = ", k_,
                    " outside [1, q_heads = ", shape.q_heads, "]");
    detail::require(scores_.size() == static_cast<size_t>(shape.layers),
                    "retrieval_heads: score table has ", scores_.size(), " layers, the model has ",
                    shape.layers);
    for (size_t l = 0; l < scores_.size(); ++l)
      detail::require(scores_[l].size() == static_cast<size_t>(shape.q_heads),
                      "retrieval_heads: score table layer ", l, " has ", scores_[l].size(),
                      " heads, the model has ", shape.q_heads, " query heads");
    const std::vector<double>& s = scores_[static_cast<size_t>(layer)];
    std::vector<int> ids(s.size());
    std::iota(ids.begin(), ids.end(), 0);
    std::partial_sort(ids.begin(), ids.begin() + k_, ids.end(), [&s](int a, int b) {
      const double x = s[static_cast<size_t>(a)], y = s[static_cast<size_t>(b)];
      return x > y || (x == y && a < b);
    });
    ids.resize(static_cast<size_t>(k_));
    std::sort(ids.begin(), ids.end());
    return ids;
  }

 private:
  std::vector<std::vector<double>> scores_;
  int k_ = default_k;
};

}  // namespace kvtrim
