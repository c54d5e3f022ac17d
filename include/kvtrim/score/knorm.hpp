#pragma once
// Key-norm scorer (kvpress's KnormPress; Devoto et al., "A Simple and Effective L2 Norm-Based
// Strategy for KV Cache Compression", 2024, arXiv:2406.11430): keys of SMALL L2 norm draw the
// most attention, so each KV head keeps the candidates whose key norm is smallest. Reads K only
// (no queries, no softmax), so it is the cheapest scorer after streaming. Written from
// score/token_scorer.hpp alone, as docs/ADDING_A_METHOD.md describes.
//
// Differences from kvpress: scores are -||k|| per KV head (kvpress ranks the same -||k||); the
// observation window is kept as with every kvtrim method, and budgets count it.
#include <cmath>
#include <vector>

#include "kvtrim/score/token_scorer.hpp"

namespace kvtrim {

struct knorm {
  template <class T>
  token_scores score(int layer, const layer_kv<T>& kv, const std::vector<int>& heads,
                     const model_shape& shape) const {
    check_scoring_input(layer, kv, heads, shape);
    token_scores out = make_scores(kv, aggregation::per_kv_head);
    for (index_t h = 0; h < kv.kv_heads(); ++h) {
      float* row = out.row(h);
      for (index_t j = 0; j < out.candidates; ++j) {
        float sq = 0.0f;
        for (index_t d = 0; d < kv.keys.dim(); ++d) {
          const float x = to_float(kv.keys(h, j, d));
          sq += x * x;
        }
        row[j] = -std::sqrt(sq);
      }
    }
    return out;
  }
};

}  // namespace kvtrim
