// knorm: each KV head keeps the candidates whose key has the smallest L2 norm (KnormPress), its
// choice worked by hand on planted keys; GQA-correct (one row per KV head, queries unread).
#include <gtest/gtest.h>

#include <vector>

#include "kvtrim/kvtrim.hpp"

namespace {

using kvtrim::index_t;

TEST(Knorm, KeepsTheSmallestKeyNormsPerKvHead) {
  const kvtrim::model_shape shape{1, 4, 2, 2, 0};  // G = 2
  const index_t n = 10, w = 2;
  std::vector<float> k(size_t(2 * n * 2), 5.f), v(k.size(), 0.f), q(size_t(4 * w * 2), 1.f);
  // Head 0: tokens 3 and 6 have small keys; head 1: tokens 1 and 7. Norms: |(0.1, 0.1)| < |(1, 0)|.
  auto set = [&](index_t h, index_t t, float a, float b) {
    k[size_t((h * n + t) * 2)] = a;
    k[size_t((h * n + t) * 2 + 1)] = b;
  };
  set(0, 3, 0.1f, 0.1f);
  set(0, 6, 1.f, 0.f);
  set(1, 1, 0.f, -0.5f);
  set(1, 7, 0.2f, 0.f);
  kvtrim::layer_kv<float> kv;
  kv.keys = kvtrim::view3<float>::head_major(k.data(), 2, n, 2);
  kv.values = kvtrim::view3<float>::head_major(v.data(), 2, n, 2);
  kv.queries = kvtrim::view3<const float>::head_major(q.data(), 4, w, 2);
  const kvtrim::token_scores s = kvtrim::knorm{}.score(0, kv, {}, shape);
  ASSERT_EQ(s.rows(), 2);
  EXPECT_FLOAT_EQ(s.row(0)[6], -1.f);
  EXPECT_FLOAT_EQ(s.row(1)[1], -0.5f);
  const kvtrim::selection sel = kvtrim::select_top(s, {4, 4});  // 2 candidates + the window
  EXPECT_EQ(sel.keep[0], (std::vector<index_t>{3, 6, 8, 9}));
  EXPECT_EQ(sel.keep[1], (std::vector<index_t>{1, 7, 8, 9}));
}

TEST(Knorm, IsRegisteredAndRunsEndToEnd) {
  const kvtrim::method_info& m = kvtrim::find_method("knorm");
  EXPECT_FALSE(m.needs_profile());
  EXPECT_TRUE(m.params.empty());
  kvtrim::method_spec spec;
  spec.name = "knorm";
  spec.target = kvtrim::budget::tokens(4);
  spec.window = 2;
  const kvtrim::method method = kvtrim::make_method(spec, {1, 2, 1, 2, 0});
  std::vector<float> k = {3, 0, 0.1f, 0, 2, 0, 0.2f, 0, 9, 9, 1, 1}, v(k.size()), q(8, 1.f);
  for (size_t i = 0; i < v.size(); ++i) v[i] = float(i / 2);  // row t holds t
  kvtrim::layer_kv<float> kv;
  kv.keys = kvtrim::view3<float>::head_major(k.data(), 1, 6, 2);
  kv.values = kvtrim::view3<float>::head_major(v.data(), 1, 6, 2);
  kv.queries = kvtrim::view3<const float>::head_major(q.data(), 2, 2, 2);
  EXPECT_EQ(method.begin(6)->compress_layer(0, kv), (std::vector<index_t>{4}));
  EXPECT_EQ(v[0], 1.f);  // tokens 1 and 3 (norms 0.1, 0.2), then the window 4, 5
  EXPECT_EQ(v[2], 3.f);
  EXPECT_EQ(v[4], 4.f);
  EXPECT_EQ(v[6], 5.f);
}

TEST(Knorm, RejectsBadInput) {
  const kvtrim::model_shape shape{1, 4, 2, 2, 0};
  std::vector<float> k(40), v(40), q(12);
  kvtrim::layer_kv<float> kv;
  kv.keys = kvtrim::view3<float>::head_major(k.data(), 2, 10, 2);
  kv.values = kvtrim::view3<float>::head_major(v.data(), 2, 10, 2);
  kv.queries = kvtrim::view3<const float>::head_major(q.data(), 3, 2, 2);  // 3 query heads, G = 2
  EXPECT_THROW(kvtrim::knorm{}.score(0, kv, {}, shape), kvtrim::error);
  EXPECT_THROW(kvtrim::knorm{}.score(1, kv, {}, shape), kvtrim::error);
}

}  // namespace
