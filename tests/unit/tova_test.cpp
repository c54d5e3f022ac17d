// tova: the last query's attention, summed over the layer's query heads, one shared set;
// its choice worked by hand on planted keys.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kvtrim/kvtrim.hpp"

namespace {

using kvtrim::index_t;

TEST(Tova, LastQueryDecidesOneSetForTheLayer) {
  const kvtrim::model_shape shape{1, 2, 2, 2, 0};  // G = 1
  const index_t n = 8, w = 2;
  std::vector<float> k(size_t(2 * n * 2), 0.f), v(k.size(), 0.f), q(size_t(2 * w * 2), 0.f);
  // The last query of head 0 points at key direction (1, 0): KV head 0's token 2 has a big one.
  // The first window query points elsewhere (0, 1) at token 4 of KV head 0: ignored by TOVA.
  q[size_t((0 * w + 1) * 2)] = 4.f;       // head 0, last query = (4, 0)
  q[size_t((0 * w + 0) * 2 + 1)] = 4.f;   // head 0, first query = (0, 4)
  k[size_t((0 * n + 2) * 2)] = 3.f;       // KV head 0, token 2 = (3, 0)
  k[size_t((0 * n + 4) * 2 + 1)] = 3.f;   // KV head 0, token 4 = (0, 3)
  // Head 1's last query points at KV head 1's token 5.
  q[size_t((1 * w + 1) * 2 + 1)] = 4.f;
  k[size_t((1 * n + 5) * 2 + 1)] = 2.f;
  kvtrim::layer_kv<float> kv;
  kv.keys = kvtrim::view3<float>::head_major(k.data(), 2, n, 2);
  kv.values = kvtrim::view3<float>::head_major(v.data(), 2, n, 2);
  kv.queries = kvtrim::view3<const float>::head_major(q.data(), 2, w, 2);
  const kvtrim::token_scores s = kvtrim::tova{}.score(0, kv, {}, shape);
  ASSERT_TRUE(s.shared);
  ASSERT_EQ(s.candidates, n - w);
  // Two candidate slots: tokens 2 (head 0's peak) and 5 (head 1's), shared by both KV heads.
  const kvtrim::selection sel = kvtrim::select_top(s, {4, 4});
  EXPECT_EQ(sel.keep[0], (std::vector<index_t>{2, 5, 6, 7}));
  EXPECT_EQ(sel.keep[1], sel.keep[0]);
  // The softmax of one query sums to 1 over all n keys: the candidates hold less than 2 (2 heads).
  float total = 0;
  for (index_t j = 0; j < s.candidates; ++j) total += s.row(0)[j];
  EXPECT_LT(total, 2.f);
  EXPECT_GT(total, 0.f);
}

TEST(TovaKeyDiff, BothAreRegistered) {
  for (const char* name : {"tova", "keydiff"}) {
    const kvtrim::method_info& m = kvtrim::find_method(name);
    EXPECT_FALSE(m.needs_profile()) << name;
    EXPECT_FALSE(m.paper.empty()) << name;
  }
}

}  // namespace
