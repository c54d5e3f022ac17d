// chunkkv / compresskv-chunk's scorer transform: whole chunks kept, best first.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kvtrim/kvtrim.hpp"

namespace {

using kvtrim::index_t;

// chunked<Inner>: every candidate takes its chunk's total, so top-k keeps whole chunks, best
// first; a chunk the budget cuts keeps its first tokens; the last partial chunk counts too.
struct planted {
  std::vector<float> row;
  template <class T>
  kvtrim::token_scores score(int, const kvtrim::layer_kv<T>& kv, const std::vector<int>&,
                             const kvtrim::model_shape&) const {
    kvtrim::token_scores s = kvtrim::make_scores(kv);
    std::copy(row.begin(), row.end(), s.row(0));
    return s;
  }
};

TEST(Chunked, KeepsWholeChunksBestFirst) {
  const kvtrim::model_shape shape{1, 1, 1, 2, 0};
  const index_t n = 12, w = 1;  // 11 candidates: chunks [0,4) [4,8) [8,11)
  std::vector<float> k(size_t(n * 2)), v(k.size()), q(2);
  kvtrim::layer_kv<float> kv;
  kv.keys = kvtrim::view3<float>::head_major(k.data(), 1, n, 2);
  kv.values = kvtrim::view3<float>::head_major(v.data(), 1, n, 2);
  kv.queries = kvtrim::view3<const float>::head_major(q.data(), 1, w, 2);
  // Token 2 is the single best token, but chunk [4,8) has the largest total (4 x 1 = 4 > 3).
  kvtrim::chunked<planted> c{planted{{0, 0, 3, 0, 1, 1, 1, 1, 0.5f, 0.5f, 0.5f}}, 4};
  const kvtrim::token_scores s = c.score(0, kv, {}, shape);
  EXPECT_EQ(std::vector<float>(s.row(0), s.row(0) + 11),
            (std::vector<float>{3, 3, 3, 3, 4, 4, 4, 4, 1.5f, 1.5f, 1.5f}));
  EXPECT_EQ(kvtrim::select_top(s, {5}).keep[0], (std::vector<index_t>{4, 5, 6, 7, 11}));
  // Six candidates: chunk [4,8), then the first two tokens of chunk [0,4).
  EXPECT_EQ(kvtrim::select_top(s, {7}).keep[0], (std::vector<index_t>{0, 1, 4, 5, 6, 7, 11}));
  kvtrim::chunked<planted> bad{planted{{}}, 0};
  EXPECT_THROW(bad.score(0, kv, {}, shape), kvtrim::error);
}


TEST(Chunked, BothMethodsAreRegistered) {
  EXPECT_EQ(kvtrim::find_method("chunkkv").param("chunk")->default_value, "10");
  EXPECT_TRUE(kvtrim::find_method("compresskv-chunk").needs_semantic_retrieval);
}

}  // namespace
