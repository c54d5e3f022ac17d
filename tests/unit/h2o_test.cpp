// h2o: observed attention of every prompt query, from the host's column sums; the choice worked
// out by hand, with kvpress's normalisation and with H2O's raw sum.
#include <gtest/gtest.h>

#include <vector>

#include "kvtrim/kvtrim.hpp"

namespace {

using kvtrim::index_t;

TEST(H2O, ColumnSumsOfBothQueryHeadsPerKVHeadNormalisedByTheQueriesThatSeeTheKey) {
  const kvtrim::model_shape shape{1, 2, 1, 2, 0};  // G = 2
  const index_t n = 8, w = 2;
  std::vector<float> k(size_t(n * 2), 0.f), v(k.size(), 0.f), q(size_t(2 * w * 2), 0.f);
  // [q_head][n]: token 0 collects 3 in all (8 queries see it: 0.375 each), token 5 collects 2.5
  // (3 queries: 0.83), token 2 collects 2 (6 queries: 0.33).
  std::vector<float> sums = {2.0f, 0.1f, 1.0f, 0.1f, 0.1f, 1.0f, 0.5f, 0.5f,
                             1.0f, 0.1f, 1.0f, 0.1f, 0.1f, 1.5f, 0.5f, 0.5f};
  kvtrim::layer_kv<float> kv;
  kv.keys = kvtrim::view3<float>::head_major(k.data(), 1, n, 2);
  kv.values = kvtrim::view3<float>::head_major(v.data(), 1, n, 2);
  kv.queries = kvtrim::view3<const float>::head_major(q.data(), 2, w, 2);
  kv.attention_sums = kvtrim::view3<const float>::head_major(sums.data(), 2, n, 1);
  kvtrim::observed_attention s;
  const kvtrim::token_scores mean = s.score(0, kv, {}, shape);
  EXPECT_FLOAT_EQ(mean.row(0)[0], 3.0f / 8);
  EXPECT_FLOAT_EQ(mean.row(0)[5], 2.5f / 3);
  EXPECT_EQ(kvtrim::select_top(mean, {4}).keep[0], (std::vector<index_t>{0, 5, 6, 7}));
  EXPECT_EQ(kvtrim::select_top(mean, {3}).keep[0], (std::vector<index_t>{5, 6, 7}));
  s.norm = kvtrim::observed_attention::normalize::none;  // H2O's accumulated sum: token 0 first
  EXPECT_EQ(kvtrim::select_top(s.score(0, kv, {}, shape), {3}).keep[0], (std::vector<index_t>{0, 6, 7}));
  kv.attention_sums = {};
  EXPECT_THROW(s.score(0, kv, {}, shape), kvtrim::error);  // the host must pass them
  kv.attention_sums = kvtrim::view3<const float>::head_major(sums.data(), 2, n - 1, 1);
  EXPECT_THROW(s.score(0, kv, {}, shape), kvtrim::error);  // too short
}

TEST(H2O, Registered) {
  const kvtrim::method_info& m = kvtrim::find_method("h2o");
  EXPECT_TRUE(m.needs_attention_sums);
  EXPECT_FALSE(m.needs_out_proj);
  EXPECT_EQ(m.param("normalize")->default_value, "count");
}

}  // namespace
