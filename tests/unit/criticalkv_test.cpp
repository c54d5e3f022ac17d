// criticalkv: CriticalKV's two-stage selection and its projected value norms, on inputs whose
// choice is worked out by hand.
#include <gtest/gtest.h>

#include <vector>

#include "kvtrim/kvtrim.hpp"

namespace {

using kvtrim::index_t;

TEST(CriticalKV, FirstStageByRawScoreThenByScoreTimesProjectedNorm) {
  // One KV head, n = 10, w = 2: 8 candidates; budget 6 keeps 4 of them. first_stage 0.5:
  // floor(0.5 * 6) - 2 = 1 candidate by raw score (token 0), three by raw x norm.
  kvtrim::token_scores s = kvtrim::token_scores::make(false, 1, 0, 10, 2);
  s.values = {5, 4, 3, 2, 1, 0.5f, 0.1f, 0.05f};
  s.weights = {1, 1, 10, 1, 1, 100, 1, 1};  // products: 5 4 30 2 1 50 .1 .05
  kvtrim::critical<> c;
  c.epsilon = 0;
  const kvtrim::selection sel = kvtrim::select_top(c.rank(s, {6}), {6});
  EXPECT_EQ(sel.keep[0], (std::vector<index_t>{0, 1, 2, 5, 8, 9}));
  // SnapKV alone keeps the raw top four; stage two by the product alone would drop token 1 for 0.
  EXPECT_EQ(kvtrim::select_top(s, {6}).keep[0], (std::vector<index_t>{0, 1, 2, 3, 8, 9}));
  c.first_stage = 0;  // everything by product: 5, 2, 0, 1
  EXPECT_EQ(kvtrim::select_top(c.rank(s, {6}), {6}).keep[0], (std::vector<index_t>{0, 1, 2, 5, 8, 9}));
  c.first_stage = 1;  // everything by raw score: SnapKV's choice
  EXPECT_EQ(kvtrim::select_top(c.rank(s, {6}), {6}).keep[0], (std::vector<index_t>{0, 1, 2, 3, 8, 9}));
  // epsilon lifts a zero-score token with a huge norm: (0 + eps) x 1e6 beats 4 x 1.
  s.values = {5, 4, 0, 0, 0, 0, 0, 0};
  s.weights = {1, 1, 1e6f, 1, 1, 1, 1, 1};
  c.first_stage = 0;
  c.epsilon = 1e-4;
  s.weight_epsilon = c.epsilon;
  EXPECT_EQ(kvtrim::select_top(c.rank(s, {4}), {4}).keep[0], (std::vector<index_t>{0, 2, 8, 9}));
}

TEST(CriticalKV, ProjectedNormIsTheL1NormOfVTimesEachQueryHeadsSliceOfWo) {
  const kvtrim::model_shape shape{1, 2, 1, 2, 0};  // G = 2, d = 2, hidden = 3
  const index_t n = 4, w = 1, hidden = 3;
  std::vector<float> k(size_t(n * 2), 0.f), v = {1, 2, 0, 1, 3, 0, 1, 1}, q(size_t(2 * w * 2), 0.f);
  // W_o^(0): v -> (v0, v1, 0); W_o^(1): v -> (v0 - v1) (1, 1, 1). [q_head][hidden][dim].
  std::vector<float> wo = {1, 0, 0, 1, 0, 0, /* head 1 */ 1, -1, 1, -1, 1, -1};
  kvtrim::layer_kv<float> kv;
  kv.keys = kvtrim::view3<float>::head_major(k.data(), 1, n, 2);
  kv.values = kvtrim::view3<float>::head_major(v.data(), 1, n, 2);
  kv.queries = kvtrim::view3<const float>::head_major(q.data(), 2, w, 2);
  kv.out_proj = kvtrim::view3<const float>::head_major(wo.data(), 2, hidden, 2);
  const std::vector<float> norms = kvtrim::projected_value_norms(kv, n - w);
  // v = (1,2): 3 + 3; (0,1): 1 + 3; (3,0): 3 + 9.
  EXPECT_EQ(norms, (std::vector<float>{6, 4, 12}));
  kvtrim::critical<> c;
  c.base.kernel = 1;
  const kvtrim::token_scores s = c.score(0, kv, {}, shape);
  EXPECT_EQ(s.weights, norms);
  EXPECT_DOUBLE_EQ(s.weight_epsilon, 1e-4 * 1 * 2);  // w x G x epsilon: sums, not means
  kv.out_proj = {};
  EXPECT_THROW(c.score(0, kv, {}, shape), kvtrim::error);  // the host must pass W_o
}

TEST(CriticalKV, RegisteredWithAdaKVBudgetsAndNeedsWo) {
  const kvtrim::method_info& m = kvtrim::find_method("criticalkv");
  EXPECT_TRUE(m.needs_out_proj);
  EXPECT_FALSE(m.needs_profile());
  EXPECT_EQ(m.param("alpha")->default_value, "0.2");
  EXPECT_EQ(m.param("epsilon")->default_value, "1e-4");
  EXPECT_EQ(m.param("first_stage")->default_value, "0.5");
}

}  // namespace
