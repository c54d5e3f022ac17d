#pragma once
// ChunkKV's span-level retention (Liu et al., "ChunkKV: Semantic-Preserving KV Cache Compression
// for Efficient Long-Context LLM Inference", 2025, arXiv:2502.00299), as a wrapper around any
// scorer: the candidates are cut into chunks of `size` consecutive tokens and every token takes
// its chunk's total score, so top-k keeps whole chunks, best first. Selection breaks ties to the
// lower token index, so a chunk cut by the budget keeps its first tokens. Rows stay sums, so
// tensor-parallel shards still add up (the sum of chunk totals is the chunk total of the sum).
//
// Reference: github.com/NVIDIA/kvpress ChunkKVPress (presses/chunkkv_press.py) and the ChunkKV
// code: scores of the inner press (SnapKV) summed per chunk of 10 tokens, top chunks kept, the
// last partial chunk included. Differences: the window is kept as by every kvtrim method; the
// paper's layer-wise index reuse (neighbouring layers sharing one selection) is not done here.
#include <algorithm>
#include <vector>

#include "kvtrim/score/token_scorer.hpp"

namespace kvtrim {

template <class Inner>
struct chunked {
  Inner inner{};
  index_t size = 10;  // ChunkKV's default chunk length

  template <class T>
  token_scores score(int layer, const layer_kv<T>& kv, const std::vector<int>& heads,
                     const model_shape& shape) const {
    detail::require(size >= 1, "chunked: chunk size ", size, " must be >= 1");
    token_scores s = inner.score(layer, kv, heads, shape);
    for (index_t r = 0; r < s.rows(); ++r) {
      float* row = s.row(r);
      for (index_t b = 0; b < s.candidates; b += size) {
        const index_t e = std::min(s.candidates, b + size);
        float total = 0.0f;
        for (index_t j = b; j < e; ++j) total += row[j];
        std::fill(row + b, row + e, total);
      }
    }
    return s;
  }
};

}  // namespace kvtrim
