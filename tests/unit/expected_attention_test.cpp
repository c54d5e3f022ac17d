// expected_attention: kvpress's expected attention from the prompt queries' mean and covariance
// and the averaged RoPE rotation, on inputs whose choice is worked out by hand.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kvtrim/kvtrim.hpp"

namespace {

using kvtrim::index_t;

TEST(ExpectedAttention, AveragedRopeRotationPairsHalvesOrAdjacent) {
  const double pi = std::acos(-1.0);
  const double freqs[2] = {pi / 2, 0.0};
  kvtrim::rope_spec r;
  r.inv_freq = freqs;
  // One position p = 1: pair 0 turns by pi/2 (cos 0, sin 1), pair 1 not at all.
  Eigen::MatrixXf R = kvtrim::average_rope_rotation(r, 4, 1, 1);
  EXPECT_NEAR(R(0, 0), 0.f, 1e-6);
  EXPECT_NEAR(R(0, 2), -1.f, 1e-6);  // halves: dims (0, 2) and (1, 3)
  EXPECT_NEAR(R(2, 0), 1.f, 1e-6);
  EXPECT_NEAR(R(1, 1), 1.f, 1e-6);
  r.pairs = kvtrim::rope_spec::pairing::adjacent;
  R = kvtrim::average_rope_rotation(r, 4, 1, 1);
  EXPECT_NEAR(R(0, 1), -1.f, 1e-6);  // adjacent: dims (0, 1) and (2, 3)
  EXPECT_NEAR(R(2, 2), 1.f, 1e-6);
  // Averaged over p = 1, 2: cos = (0 - 1) / 2, sin = (1 + 0) / 2.
  R = kvtrim::average_rope_rotation(r, 4, 1, 2);
  EXPECT_NEAR(R(0, 0), -0.5f, 1e-6);
  EXPECT_NEAR(R(1, 0), 0.5f, 1e-6);
}

struct planted {
  static constexpr index_t n = 10, w = 2, d = 2;
  std::vector<float> k = std::vector<float>(size_t(n * d), 0.f), v = std::vector<float>(size_t(n * d), 1.f);
  std::vector<float> q = std::vector<float>(size_t(w * d), 0.f), pq = std::vector<float>(size_t(n * d), 0.f);
  double freqs[1] = {0.0};  // no rotation: R = I
  kvtrim::layer_kv<float> view() {
    kvtrim::layer_kv<float> kv;
    kv.keys = kvtrim::view3<float>::head_major(k.data(), 1, n, d);
    kv.values = kvtrim::view3<float>::head_major(v.data(), 1, n, d);
    kv.queries = kvtrim::view3<const float>::head_major(q.data(), 1, w, d);
    kv.prompt_queries = kvtrim::view3<const float>::head_major(pq.data(), 1, n, d);
    kv.rope.inv_freq = freqs;
    return kv;
  }
};

TEST(ExpectedAttention, MeanQueryPicksTheAlignedKeySinksAreKept) {
  const kvtrim::model_shape shape{1, 1, 1, 2, 0};
  planted p;
  for (index_t t = 0; t < p.n; ++t) p.pq[size_t(t * 2)] = 2.f;  // every query (2, 0)
  p.k[size_t(5 * 2)] = 3.f;   // token 5 = (3, 0): aligned with the mean query
  p.k[size_t(3 * 2 + 1)] = 3.f;  // token 3 = (0, 3): orthogonal
  kvtrim::expected_attention e;
  e.n_sink = 1;
  const kvtrim::token_scores s = e.score(0, p.view(), {}, shape);
  EXPECT_EQ(kvtrim::select_top(s, {4}).keep[0], (std::vector<index_t>{0, 5, 8, 9}));  // sink 0, then 5
  // The value norm weighs: token 5 holds softmax e^4.24 / (e^4.24 + 8) = 0.90 x |v| 1.41, token 3
  // 0.013 x |v| 1000 = 13: token 3 is kept.
  p.v[size_t(3 * 2)] = 1000.f;
  EXPECT_EQ(kvtrim::select_top(e.score(0, p.view(), {}, shape), {4}).keep[0], (std::vector<index_t>{0, 3, 8, 9}));
  e.use_vnorm = false;
  EXPECT_EQ(kvtrim::select_top(e.score(0, p.view(), {}, shape), {4}).keep[0], (std::vector<index_t>{0, 5, 8, 9}));
}

TEST(ExpectedAttention, CovarianceFavoursKeysAlongTheQueriesSpread) {
  const kvtrim::model_shape shape{1, 1, 1, 2, 0};
  planted p;
  // Queries (0, +-3) past the sink: mean 0, variance 9 along dim 1. The mean alone sees nothing;
  // the covariance term 9 k1^2 / (2 d) picks token 6 = (0, 2) over token 2 = (1.5, 0).
  for (index_t t = 1; t < p.n; ++t) p.pq[size_t(t * 2 + 1)] = (t % 2 ? 3.f : -3.f);
  p.pq[size_t(1 * 2 + 1)] = 0.f;  // 9 queries past the sink: make the mean exactly 0
  p.k[size_t(6 * 2 + 1)] = 2.f;
  p.k[size_t(2 * 2)] = 1.5f;
  kvtrim::expected_attention e;
  e.n_sink = 1;
  e.use_vnorm = false;
  EXPECT_EQ(kvtrim::select_top(e.score(0, p.view(), {}, shape), {4}).keep[0], (std::vector<index_t>{0, 6, 8, 9}));
  // Without the covariance every logit is 0: equal scores, the lowest index wins.
  e.use_covariance = false;
  EXPECT_EQ(kvtrim::select_top(e.score(0, p.view(), {}, shape), {4}).keep[0], (std::vector<index_t>{0, 1, 8, 9}));
  auto kv = p.view();
  kv.prompt_queries = {};
  EXPECT_THROW(e.score(0, kv, {}, shape), kvtrim::error);
  kv = p.view();
  kv.rope = {};
  EXPECT_THROW(e.score(0, kv, {}, shape), kvtrim::error);
}

TEST(ExpectedAttention, RegisteredWithKvpressDefaults) {
  const kvtrim::method_info& m = kvtrim::find_method("expected_attention");
  EXPECT_TRUE(m.needs_prompt_queries);
  EXPECT_EQ(m.param("n_future")->default_value, "512");
  EXPECT_EQ(m.param("n_sink")->default_value, "4");
  EXPECT_EQ(m.param("covariance")->default_value, "true");
  EXPECT_EQ(m.param("vnorm")->default_value, "true");
  EXPECT_EQ(m.param("epsilon")->default_value, "0");
}

}  // namespace
