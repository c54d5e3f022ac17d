// keydiff: per KV head, keys least aligned with the mean key direction are kept; its choice
// worked by hand on planted keys.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kvtrim/kvtrim.hpp"

namespace {

using kvtrim::index_t;

TEST(KeyDiff, KeepsTheKeysLeastLikeTheMeanDirection) {
  const kvtrim::model_shape shape{1, 1, 1, 2, 0};
  const index_t n = 6, w = 1;
  // Most keys point along (1, 0); token 3 points along (0, 1) and token 1 along (-1, 0).
  std::vector<float> k = {1, 0, -2, 0, 1, 0.1f, 0, 5, 3, 0, 1, 0}, v(k.size()), q(2, 1.f);
  kvtrim::layer_kv<float> kv;
  kv.keys = kvtrim::view3<float>::head_major(k.data(), 1, n, 2);
  kv.values = kvtrim::view3<float>::head_major(v.data(), 1, n, 2);
  kv.queries = kvtrim::view3<const float>::head_major(q.data(), 1, w, 2);
  const kvtrim::token_scores s = kvtrim::keydiff{}.score(0, kv, {}, shape);
  // Anchor = mean of unit keys = ((1 - 1 + 0.995 + 0 + 1) / 6, (0.0995 + 1) / 6); token 1 is the
  // most opposed (cosine near -1), then token 3 (orthogonal-ish).
  const kvtrim::selection sel = kvtrim::select_top(s, {3});
  EXPECT_EQ(sel.keep[0], (std::vector<index_t>{1, 3, 5}));
  EXPECT_GT(s.row(0)[1], s.row(0)[3]);
  EXPECT_GT(s.row(0)[3], s.row(0)[0]);
}

TEST(KeyDiff, ZeroKeysScoreNeutrally) {
  const kvtrim::model_shape shape{1, 1, 1, 2, 0};
  std::vector<float> k(8, 0.f), v(8), q(2, 1.f);
  kvtrim::layer_kv<float> kv;
  kv.keys = kvtrim::view3<float>::head_major(k.data(), 1, 4, 2);
  kv.values = kvtrim::view3<float>::head_major(v.data(), 1, 4, 2);
  kv.queries = kvtrim::view3<const float>::head_major(q.data(), 1, 1, 2);
  const kvtrim::token_scores s = kvtrim::keydiff{}.score(0, kv, {}, shape);
  for (index_t j = 0; j < s.candidates; ++j) EXPECT_EQ(s.row(0)[j], 0.f);
}

}  // namespace
