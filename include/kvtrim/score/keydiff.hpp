#pragma once
// KeyDiff's scorer (Park et al., "KeyDiff: Key Similarity-Based KV Cache Eviction for Long-Context
// LLM Inference in Resource-Constrained Environments", 2025, arXiv:2504.15364): keys that differ
// most from the layer's average key direction are kept. Query-free: reads K only.
//
// Reference: kvpress KeyDiffPress (presses/keydiff_press.py): anchor = mean over tokens of the
// L2-normalised keys of a KV head; score = -cosine_similarity(key, anchor). Differences: the
// observation window is kept like every kvtrim method (the anchor still averages all n keys, as
// kvpress's does); a zero key or anchor scores 0 (cosine undefined).
#include <cmath>
#include <vector>

#include "kvtrim/score/token_scorer.hpp"

namespace kvtrim {

struct keydiff {
  template <class T>
  token_scores score(int layer, const layer_kv<T>& kv, const std::vector<int>& heads,
                     const model_shape& shape) const {
    check_scoring_input(layer, kv, heads, shape);
    token_scores out = make_scores(kv, aggregation::per_kv_head);
    const index_t n = kv.prompt_length(), d = kv.keys.dim();
    std::vector<double> anchor(static_cast<size_t>(d));
    std::vector<float> norm(static_cast<size_t>(n));
    for (index_t h = 0; h < kv.kv_heads(); ++h) {
      std::fill(anchor.begin(), anchor.end(), 0.0);
      for (index_t t = 0; t < n; ++t) {
        double sq = 0.0;
        for (index_t x = 0; x < d; ++x) sq += double(to_float(kv.keys(h, t, x))) * to_float(kv.keys(h, t, x));
        norm[static_cast<size_t>(t)] = static_cast<float>(std::sqrt(sq));
        if (sq > 0.0)
          for (index_t x = 0; x < d; ++x)
            anchor[static_cast<size_t>(x)] += to_float(kv.keys(h, t, x)) / std::sqrt(sq);
      }
      double anorm = 0.0;
      for (double a : anchor) anorm += (a / double(n)) * (a / double(n));
      anorm = std::sqrt(anorm);
      float* row = out.row(h);
      for (index_t j = 0; j < out.candidates; ++j) {
        const float kn = norm[static_cast<size_t>(j)];
        if (kn == 0.0f || anorm == 0.0) continue;  // cosine undefined: neutral 0
        double dot = 0.0;
        for (index_t x = 0; x < d; ++x)
          dot += double(to_float(kv.keys(h, j, x))) * (anchor[static_cast<size_t>(x)] / double(n));
        row[j] = static_cast<float>(-dot / (double(kn) * anorm));
      }
    }
    return out;
  }
};

}  // namespace kvtrim
