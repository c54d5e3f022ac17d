#pragma once
// StreamingLLM (Xiao et al., "Efficient Streaming Language Models with Attention Sinks", 2023):
// keep the first `sinks` tokens (attention sinks) and the most recent ones. As a scorer: the
// sinks score above every other candidate (earliest highest), the rest increase with position,
// so any top-k keeps the sinks first and then the tokens closest to the window. Reads neither K
// nor the queries; every row is identical.
#include <vector>

#include "kvtrim/core/error.hpp"
#include "kvtrim/core/layer_kv.hpp"
#include "kvtrim/core/scores.hpp"
#include "kvtrim/core/shape.hpp"
#include "kvtrim/score/token_scorer.hpp"

namespace kvtrim {

struct streaming {
  index_t sinks = 4;  // StreamingLLM's default of 4 initial tokens
  aggregation aggregate = aggregation::per_kv_head;

  void validate() const {
    detail::require(sinks >= 0, "streaming: sinks ", sinks, " must be >= 0");
  }

  template <class T>
  token_scores score(int layer, const layer_kv<T>& in, const std::vector<int>& heads,
                     const model_shape& shape) const {
    validate();
    check_scoring_input(layer, in, heads, shape);
    token_scores out = make_scores(in, aggregate);
    const index_t c = out.candidates;
    // Recent tokens: j + 1 in [1, c]; sinks: c + (sinks - j) > c. Exact in float up to 2^24
    // candidates, far beyond any context this runs on.
    for (index_t r = 0; r < out.rows(); ++r) {
      float* row = out.row(r);
      for (index_t j = 0; j < c; ++j)
        row[j] = static_cast<float>(j < sinks ? c + (sinks - j) : j + 1);
    }
    return out;
  }
};

}  // namespace kvtrim
