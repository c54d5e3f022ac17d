// Token scorers on constructed views: planted tokens, hand-worked pooling, the causal mask inside
// the window, GQA aggregation, tensor-parallel shards, element types and strides, StreamingLLM,
// random, CAKE's indicator and layer statistics, and every bad input.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "kvtrim/core/layer_kv.hpp"
#include "kvtrim/core/scores.hpp"
#include "kvtrim/core/shape.hpp"
#include "kvtrim/score/aggregation.hpp"
#include "kvtrim/score/cake.hpp"
#include "kvtrim/compose/registry.hpp"
#include "kvtrim/score/misgrouped.hpp"
#include "kvtrim/score/pooling.hpp"
#include "kvtrim/score/random.hpp"
#include "kvtrim/score/streaming.hpp"
#include "kvtrim/score/window_attention.hpp"

namespace {

using kvtrim::aggregation;
using kvtrim::index_t;
using kvtrim::layer_kv;
using kvtrim::model_shape;
using kvtrim::pooling;
using kvtrim::token_scores;
using kvtrim::view3;

// One layer's K, V (head-major [kv][n][d]) and window queries ([q][w][d]) in owned memory.
struct layer_data {
  index_t kv, G, n, w, d;
  std::vector<float> K, V, Q;

  layer_data(index_t kv_, index_t G_, index_t n_, index_t w_, index_t d_)
      : kv(kv_),
        G(G_),
        n(n_),
        w(w_),
        d(d_),
        K(static_cast<size_t>(kv_ * n_ * d_), 0.0f),
        V(K.size(), 0.0f),
        Q(static_cast<size_t>(kv_ * G_ * w_ * d_), 0.0f) {}

  float& k(index_t h, index_t t, index_t x) { return K[static_cast<size_t>((h * n + t) * d + x)]; }
  float& q(index_t h, index_t i, index_t x) { return Q[static_cast<size_t>((h * w + i) * d + x)]; }

  void randomize(std::uint32_t seed, float kscale = 1.0f, float qscale = 1.0f) {
    std::mt19937 g(seed);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (float& x : K) x = nd(g) * kscale;
    for (float& x : V) x = nd(g);
    for (float& x : Q) x = nd(g) * qscale;
  }

  model_shape shape(int layers = 2) const {
    model_shape s;
    s.layers = layers;
    s.q_heads = static_cast<int>(kv * G);
    s.kv_heads = static_cast<int>(kv);
    s.head_dim = static_cast<int>(d);
    return s;
  }

  layer_kv<float> view() {
    layer_kv<float> in;
    in.keys = view3<float>::head_major(K.data(), kv, n, d);
    in.values = view3<float>::head_major(V.data(), kv, n, d);
    in.queries = view3<const float>::head_major(Q.data(), kv * G, w, d);
    return in;
  }
  // KV heads [h0, h0 + count) as one tensor-parallel rank holds them.
  layer_kv<float> shard(index_t h0, index_t count) {
    layer_kv<float> in = view();
    in.keys = in.keys.head_range(h0, count);
    in.values = in.values.head_range(h0, count);
    in.queries = in.queries.head_range(h0 * G, count * G);
    in.kv_head_offset = h0;
    return in;
  }
};

// Reference, straight from the definition, in double: per candidate j of local query head h,
// the w attention weights a_ij (softmax over all n keys, causal inside the window).
std::vector<std::vector<double>> ref_attention(layer_data& L, index_t h) {
  const index_t n = L.n, w = L.w, c = n - w, g = h / L.G;
  std::vector<std::vector<double>> a(static_cast<size_t>(w), std::vector<double>(n, 0.0));
  for (index_t i = 0; i < w; ++i) {
    std::vector<double> l(static_cast<size_t>(n), -INFINITY);
    double m = -INFINITY;
    for (index_t j = 0; j <= c + i; ++j) {
      double s = 0;
      for (index_t x = 0; x < L.d; ++x) s += double(L.q(h, i, x)) * L.k(g, j, x);
      l[static_cast<size_t>(j)] = s / std::sqrt(double(L.d));
      m = std::max(m, l[static_cast<size_t>(j)]);
    }
    double z = 0;
    for (index_t j = 0; j <= c + i; ++j) z += std::exp(l[static_cast<size_t>(j)] - m);
    for (index_t j = 0; j <= c + i; ++j)
      a[static_cast<size_t>(i)][static_cast<size_t>(j)] =
          std::exp(l[static_cast<size_t>(j)] - m) / z;
  }
  return a;
}

std::vector<double> ref_pool(const std::vector<double>& x, pooling mode, int k) {
  const auto c = static_cast<index_t>(x.size());
  const index_t p = k / 2;
  std::vector<double> out(x.size());
  for (index_t j = 0; j < c; ++j) {
    double s = 0, m = -INFINITY;
    for (index_t t = j - p; t <= j + p; ++t)
      if (t >= 0 && t < c) {
        s += x[static_cast<size_t>(t)];
        m = std::max(m, x[static_cast<size_t>(t)]);
      }
    out[static_cast<size_t>(j)] = mode == pooling::avg   ? s / k
                                  : mode == pooling::max ? m
                                                         : x[static_cast<size_t>(j)];
  }
  return out;
}

// Per-head raw score: SnapKV (sum over the window) or CAKE (mean + gamma * unbiased variance).
std::vector<double> ref_raw(layer_data& L, index_t h, bool cake, double gamma) {
  const auto a = ref_attention(L, h);
  const index_t c = L.n - L.w;
  std::vector<double> s(static_cast<size_t>(c), 0.0);
  for (index_t j = 0; j < c; ++j) {
    double sum = 0;
    for (index_t i = 0; i < L.w; ++i) sum += a[static_cast<size_t>(i)][static_cast<size_t>(j)];
    if (!cake) {
      s[static_cast<size_t>(j)] = sum;
      continue;
    }
    const double mean = sum / L.w;
    double var = 0;
    for (index_t i = 0; i < L.w; ++i) {
      const double e = a[static_cast<size_t>(i)][static_cast<size_t>(j)] - mean;
      var += e * e;
    }
    var = L.w > 1 ? var / (L.w - 1) : 0.0;
    s[static_cast<size_t>(j)] = mean + gamma * var;
  }
  return s;
}

// Reference rows for the given contributing local heads of each row.
std::vector<double> ref_row(layer_data& L, const std::vector<index_t>& heads, pooling mode, int k,
                            bool cake = false, double gamma = 0.0) {
  std::vector<double> row(static_cast<size_t>(L.n - L.w), 0.0);
  for (index_t h : heads) {
    const auto p = ref_pool(ref_raw(L, h, cake, gamma), mode, k);
    for (size_t j = 0; j < row.size(); ++j) row[j] += p[j];
  }
  return row;
}

void expect_row_near(const token_scores& s, index_t r, const std::vector<double>& ref, double tol) {
  ASSERT_EQ(s.candidates, static_cast<index_t>(ref.size()));
  for (index_t j = 0; j < s.candidates; ++j)
    ASSERT_NEAR(s.row(r)[j], ref[static_cast<size_t>(j)], tol) << "row " << r << " token " << j;
}

void expect_same(const token_scores& a, const token_scores& b, double tol) {
  ASSERT_EQ(a.values.size(), b.values.size());
  ASSERT_EQ(a.rows(), b.rows());
  for (size_t i = 0; i < a.values.size(); ++i) ASSERT_NEAR(a.values[i], b.values[i], tol) << i;
}

index_t argmax(const float* row, index_t c) {
  return static_cast<index_t>(std::max_element(row, row + c) - row);
}

// Top-k by score, ties to the lower index, returned ascending (what selection does with a row).
std::vector<index_t> top_k(const float* row, index_t c, index_t k) {
  std::vector<index_t> id(static_cast<size_t>(c));
  std::iota(id.begin(), id.end(), 0);
  std::stable_sort(id.begin(), id.end(), [row](index_t a, index_t b) { return row[a] > row[b]; });
  id.resize(static_cast<size_t>(std::min(k, c)));
  std::sort(id.begin(), id.end());
  return id;
}

// ---------------------------------------------------------------- pooling

TEST(ScorePooling, AvgCountsPaddingInTheDivisorAtTheEdges) {
  const std::vector<float> x = {1, 2, 3, 4, 5};
  std::vector<float> out(5);
  kvtrim::pool1d(x.data(), 5, pooling::avg, 3, 0, 5, out.data());
  const std::vector<float> k3 = {1.0f, 2.0f, 3.0f, 4.0f, 3.0f};  // (4 + 5 + pad 0) / 3 = 3
  for (size_t j = 0; j < 5; ++j) EXPECT_FLOAT_EQ(out[j], k3[j]) << j;
  kvtrim::pool1d(x.data(), 5, pooling::avg, 5, 0, 5, out.data());
  const std::vector<float> k5 = {1.2f, 2.0f, 3.0f, 2.8f, 2.4f};  // (1+2+3)/5, ..., (3+4+5)/5
  for (size_t j = 0; j < 5; ++j) EXPECT_FLOAT_EQ(out[j], k5[j]) << j;
}

TEST(ScorePooling, MaxIgnoresPaddingAndNoneIsIdentity) {
  const std::vector<float> x = {-3, -1, -4, -1, -5};  // negative: zero padding would win
  std::vector<float> out(5);
  kvtrim::pool1d(x.data(), 5, pooling::max, 3, 0, 5, out.data());
  const std::vector<float> want = {-1, -1, -1, -1, -1};
  for (size_t j = 0; j < 5; ++j) EXPECT_FLOAT_EQ(out[j], want[j]) << j;
  const std::vector<float> y = {3, 1, 4, 1, 5};
  kvtrim::pool1d(y.data(), 5, pooling::max, 3, 0, 5, out.data());
  const std::vector<float> want_y = {3, 4, 4, 5, 5};
  for (size_t j = 0; j < 5; ++j) EXPECT_FLOAT_EQ(out[j], want_y[j]) << j;
  kvtrim::pool1d(y.data(), 5, pooling::none, 5, 0, 5, out.data());
  for (size_t j = 0; j < 5; ++j) EXPECT_FLOAT_EQ(out[j], y[j]) << j;
}

TEST(ScorePooling, KernelWiderThanTheRowAndPartialRanges) {
  const std::vector<float> x = {1, 2};
  std::vector<float> out(2);
  kvtrim::pool1d(x.data(), 2, pooling::avg, 5, 0, 2, out.data());
  EXPECT_FLOAT_EQ(out[0], 0.6f);
  EXPECT_FLOAT_EQ(out[1], 0.6f);
  kvtrim::pool1d(x.data(), 2, pooling::max, 7, 0, 2, out.data());
  EXPECT_FLOAT_EQ(out[0], 2.0f);
  EXPECT_FLOAT_EQ(out[1], 2.0f);
  // A sub-range equals the same slice of the full result (the scorer pools block by block).
  std::vector<float> y(50), full(50), part(20);
  std::mt19937 g(3);
  for (float& v : y) v = std::uniform_real_distribution<float>(0, 1)(g);
  for (pooling m : {pooling::avg, pooling::max}) {
    kvtrim::pool1d(y.data(), 50, m, 7, 0, 50, full.data());
    kvtrim::pool1d(y.data(), 50, m, 7, 17, 37, part.data());
    for (size_t j = 0; j < 20; ++j) EXPECT_NEAR(part[j], full[j + 17], 1e-6) << j;
  }
}

// ---------------------------------------------------------------- window attention

TEST(ScoreWindowAttention, MatchesTheDefinitionOverSeveralKeyBlocks) {
  layer_data L(3, 3, 600, 8, 32);  // 600 keys: three 256-key blocks, the last partial
  L.randomize(7, 1.0f, 1.5f);
  const model_shape shape = L.shape();
  const std::vector<int> heads = {0, 4, 5, 8};  // group 0: {0}; group 1: {4, 5}; group 2: {8}
  for (pooling mode : {pooling::avg, pooling::max, pooling::none}) {
    kvtrim::window_attention per{mode, 5, aggregation::per_kv_head};
    const token_scores s = per.score(1, L.view(), heads, shape);
    ASSERT_EQ(s.rows(), 3);
    EXPECT_EQ(s.candidates, 592);
    EXPECT_EQ(s.window, 8);
    expect_row_near(s, 0, ref_row(L, {0}, mode, 5), 1e-5);
    expect_row_near(s, 1, ref_row(L, {4, 5}, mode, 5), 1e-5);
    expect_row_near(s, 2, ref_row(L, {8}, mode, 5), 1e-5);
    kvtrim::window_attention sh{mode, 3, aggregation::shared};
    const token_scores t = sh.score(1, L.view(), heads, shape);
    ASSERT_EQ(t.rows(), 1);
    expect_row_near(t, 0, ref_row(L, {0, 4, 5, 8}, mode, 3), 2e-5);
  }
}

TEST(ScoreWindowAttention, PlantedTokenAlignedWithTheWindowWinsItsKvHead) {
  layer_data L(2, 2, 64, 4, 16);
  L.randomize(11, 0.3f, 0.3f);
  // Every window query of group 0 points along u; key 20 of KV head 0 is 6u.
  std::vector<float> u(16);
  for (index_t x = 0; x < 16; ++x) u[static_cast<size_t>(x)] = (x % 3 == 0) ? 1.0f : -0.5f;
  for (index_t h = 0; h < 2; ++h)
    for (index_t i = 0; i < 4; ++i)
      for (index_t x = 0; x < 16; ++x) L.q(h, i, x) += u[static_cast<size_t>(x)];
  for (index_t x = 0; x < 16; ++x) L.k(0, 20, x) = 6.0f * u[static_cast<size_t>(x)];
  for (pooling mode : {pooling::none, pooling::max}) {
    const token_scores s = kvtrim::window_attention{mode, 5, aggregation::per_kv_head}.score(
        0, L.view(), {}, L.shape());
    if (mode == pooling::none) {
      EXPECT_EQ(argmax(s.row(0), s.candidates), 20);
      // It takes most of the window's attention: close to w = 4 in total.
      EXPECT_GT(s.row(0)[20], 3.0f);
      EXPECT_LT(s.row(1)[20], 1.0f);  // KV head 1 has no such key
    } else {
      // Max pooling spreads the peak to its neighbours, never beyond kernel / 2.
      for (index_t j = 18; j <= 22; ++j) EXPECT_FLOAT_EQ(s.row(0)[j], s.row(0)[20]);
      EXPECT_LT(s.row(0)[17], s.row(0)[20]);
    }
  }
  // Avg pooling: the planted token's neighbourhood [18, 22] is what a budget of 5 keeps.
  const token_scores a = kvtrim::window_attention{}.score(0, L.view(), {}, L.shape());
  const std::vector<index_t> want = {18, 19, 20, 21, 22};
  EXPECT_EQ(top_k(a.row(0), a.candidates, 5), want);
}

TEST(ScoreWindowAttention, CausalMaskHidesLaterWindowKeysFromEarlierQueries) {
  // n = 10, w = 4: window queries at positions 6..9, candidates 0..5. Every key is 0 except
  // key 7 (inside the window), strongly aligned with every query. Query 6 cannot see key 7, so
  // it spreads 1/7 over keys 0..6; queries 7..9 put ~all mass on key 7. Without the mask every
  // candidate would score ~0.
  layer_data L(1, 1, 10, 4, 8);
  for (index_t i = 0; i < 4; ++i)
    for (index_t x = 0; x < 8; ++x) L.q(0, i, x) = 1.0f;
  for (index_t x = 0; x < 8; ++x) L.k(0, 7, x) = 12.0f;  // logit 8 * 12 / sqrt(8) ~ 34
  const token_scores s = kvtrim::window_attention{pooling::none, 1, aggregation::per_kv_head}.score(
      0, L.view(), {}, L.shape());
  ASSERT_EQ(s.candidates, 6);
  for (index_t j = 0; j < 6; ++j) EXPECT_NEAR(s.row(0)[j], 1.0 / 7.0, 1e-6) << j;
}

TEST(ScoreWindowAttention, GqaGroupsThatDisagreeAreSummed) {
  // One KV head, G = 2: query head 0 looks at token 3, query head 1 at token 7.
  layer_data L(2, 2, 24, 2, 8);
  L.randomize(5, 0.1f, 0.1f);
  for (index_t x = 0; x < 8; ++x) {
    L.k(0, 3, x) = (x == 0) ? 8.0f : 0.0f;
    L.k(0, 7, x) = (x == 1) ? 8.0f : 0.0f;
    for (index_t i = 0; i < 2; ++i) {
      L.q(0, i, x) = (x == 0) ? 2.0f : 0.0f;
      L.q(1, i, x) = (x == 1) ? 2.0f : 0.0f;
    }
  }
  const model_shape shape = L.shape();
  auto score = [&](std::vector<int> heads, aggregation agg) {
    return kvtrim::window_attention{pooling::none, 1, agg}.score(0, L.view(), heads, shape);
  };
  const token_scores h0 = score({0}, aggregation::per_kv_head);
  const token_scores h1 = score({1}, aggregation::per_kv_head);
  const token_scores both = score({0, 1}, aggregation::per_kv_head);
  EXPECT_EQ(argmax(h0.row(0), h0.candidates), 3);
  EXPECT_EQ(argmax(h1.row(0), h1.candidates), 7);
  for (index_t j = 0; j < both.candidates; ++j)
    EXPECT_NEAR(both.row(0)[j], h0.row(0)[j] + h1.row(0)[j], 1e-6) << j;
  const std::vector<index_t> top2 = {3, 7};
  EXPECT_EQ(top_k(both.row(0), both.candidates, 2), top2);

  // Shared: one row = sum over every selected head, across KV heads.
  const token_scores all = score({0, 1, 2, 3}, aggregation::per_kv_head);
  const token_scores shared = score({0, 1, 2, 3}, aggregation::shared);
  ASSERT_EQ(shared.rows(), 1);
  for (index_t j = 0; j < shared.candidates; ++j)
    EXPECT_NEAR(shared.row(0)[j], all.row(0)[j] + all.row(1)[j], 1e-5) << j;
  const token_scores shared12 = score({1, 2}, aggregation::shared);
  const token_scores h2 = score({2}, aggregation::per_kv_head);
  for (index_t j = 0; j < shared12.candidates; ++j)
    EXPECT_NEAR(shared12.row(0)[j], h1.row(0)[j] + h2.row(1)[j], 1e-5) << j;

  // per_kv_head: a KV head with no selected query head is scored by all G of its heads.
  const token_scores only1 = score({1}, aggregation::per_kv_head);
  for (index_t j = 0; j < only1.candidates; ++j)
    EXPECT_NEAR(only1.row(1)[j], all.row(1)[j], 1e-6) << j;
}

TEST(ScoreWindowAttention, ReadsOnlyTheSelectedHeads) {
  layer_data L(2, 2, 40, 4, 8);
  L.randomize(21);
  const std::vector<int> heads = {0, 3};
  for (aggregation agg : {aggregation::per_kv_head, aggregation::shared}) {
    const kvtrim::window_attention sc{pooling::avg, 5, agg};
    const token_scores before = sc.score(0, L.view(), heads, L.shape());
    for (index_t h : {1, 2})  // unselected: poison their queries
      for (index_t i = 0; i < 4; ++i)
        for (index_t x = 0; x < 8; ++x) L.q(h, i, x) = NAN;
    const token_scores after = sc.score(0, L.view(), heads, L.shape());
    for (size_t i = 0; i < before.values.size(); ++i) {
      ASSERT_TRUE(std::isfinite(after.values[i]));
      ASSERT_EQ(before.values[i], after.values[i]);
    }
    L.randomize(21);
  }
}

TEST(ScoreWindowAttention, TwoShardsSumToTheSingleRankScores) {
  layer_data L(4, 2, 300, 6, 16);
  L.randomize(33);
  const model_shape shape = L.shape();
  const std::vector<int> heads = {1, 2, 5, 6};  // two in each half
  for (aggregation agg : {aggregation::shared, aggregation::per_kv_head}) {
    const kvtrim::window_attention sc{pooling::avg, 5, agg, true};
    const token_scores one = sc.score(0, L.view(), heads, shape);
    const token_scores a = sc.score(0, L.shard(0, 2), heads, shape);
    const token_scores b = sc.score(0, L.shard(2, 2), heads, shape);
    EXPECT_EQ(a.kv_head_offset, 0);
    EXPECT_EQ(b.kv_head_offset, 2);
    if (agg == aggregation::shared) {
      token_scores sum = a;
      sum.accumulate(b);
      expect_same(sum, one, 1e-5);
      EXPECT_NEAR(sum.entropy_sum, one.entropy_sum, 1e-9 * one.entropy_sum);
      EXPECT_NEAR(sum.variance_sum, one.variance_sum, 1e-6 * one.variance_sum + 1e-12);
      EXPECT_EQ(sum.stat_heads, 4.0);
    } else {
      for (index_t j = 0; j < one.candidates; ++j) {
        ASSERT_NEAR(a.row(0)[j], one.row(0)[j], 1e-6);
        ASSERT_NEAR(a.row(1)[j], one.row(1)[j], 1e-6);
        ASSERT_NEAR(b.row(0)[j], one.row(2)[j], 1e-6);
        ASSERT_NEAR(b.row(1)[j], one.row(3)[j], 1e-6);
      }
    }
  }
  // A shard holding none of the selected heads contributes zeros to the shared row.
  const token_scores none = kvtrim::window_attention{pooling::avg, 5, aggregation::shared}.score(
      0, L.shard(0, 2), {5, 6}, shape);
  for (float v : none.values) ASSERT_EQ(v, 0.0f);
}

template <class T>
std::vector<T> convert(const std::vector<float>& x) {
  std::vector<T> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = kvtrim::from_float<T>(x[i]);
  return y;
}
template <class T>
std::vector<float> round_trip(const std::vector<float>& x) {
  std::vector<float> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = kvtrim::to_float(kvtrim::from_float<T>(x[i]));
  return y;
}

template <class T>
token_scores score_as(layer_data& L, const kvtrim::window_attention& sc,
                      const std::vector<int>& h) {
  std::vector<T> K = convert<T>(L.K), V = convert<T>(L.V), Q = convert<T>(L.Q);
  layer_kv<T> in;
  in.keys = view3<T>::head_major(K.data(), L.kv, L.n, L.d);
  in.values = view3<T>::head_major(V.data(), L.kv, L.n, L.d);
  in.queries = view3<const T>::head_major(Q.data(), L.kv * L.G, L.w, L.d);
  return sc.score(0, in, h, L.shape());
}

TEST(ScoreWindowAttention, HalfAndBfloat16ViewsGiveTheFloatResult) {
  layer_data L(2, 2, 280, 8, 32);
  L.randomize(44, 0.8f, 0.8f);
  const kvtrim::window_attention sc{pooling::avg, 5, aggregation::per_kv_head};
  const std::vector<int> heads = {0, 1, 3};
  const token_scores f = sc.score(0, L.view(), heads, L.shape());
  const token_scores h = score_as<kvtrim::half>(L, sc, heads);
  const token_scores b = score_as<kvtrim::bfloat16>(L, sc, heads);
  expect_same(h, f, 1e-3);  // inputs rounded to 11 / 8 significant bits
  expect_same(b, f, 1e-2);
  // On the same rounded values, the element type changes nothing but the load.
  layer_data R = L;
  R.K = round_trip<kvtrim::half>(L.K);
  R.Q = round_trip<kvtrim::half>(L.Q);
  expect_same(h, sc.score(0, R.view(), heads, R.shape()), 1e-6);
  R.K = round_trip<kvtrim::bfloat16>(L.K);
  R.Q = round_trip<kvtrim::bfloat16>(L.Q);
  expect_same(b, sc.score(0, R.view(), heads, R.shape()), 1e-6);
}

TEST(ScoreWindowAttention, StridedTokenMajorViewsMatchHeadMajor) {
  layer_data L(3, 2, 270, 4, 16);
  L.randomize(55);
  const model_shape shape = L.shape();
  const kvtrim::window_attention sc{pooling::max, 5, aggregation::per_kv_head, true};
  const token_scores ref = sc.score(0, L.view(), {}, shape);

  // [token][head][dim] (the engine's prefill layout) for K, V and Q.
  std::vector<float> Kt(L.K.size()), Vt(L.V.size()), Qt(L.Q.size());
  for (index_t h = 0; h < L.kv; ++h)
    for (index_t t = 0; t < L.n; ++t)
      for (index_t x = 0; x < L.d; ++x) {
        Kt[static_cast<size_t>((t * L.kv + h) * L.d + x)] = L.k(h, t, x);
        Vt[static_cast<size_t>((t * L.kv + h) * L.d + x)] = 0.0f;
      }
  for (index_t h = 0; h < L.kv * L.G; ++h)
    for (index_t i = 0; i < L.w; ++i)
      for (index_t x = 0; x < L.d; ++x)
        Qt[static_cast<size_t>((i * L.kv * L.G + h) * L.d + x)] = L.q(h, i, x);
  layer_kv<float> tm;
  tm.keys = view3<float>::token_major(Kt.data(), L.kv, L.n, L.d);
  tm.values = view3<float>::token_major(Vt.data(), L.kv, L.n, L.d);
  tm.queries = view3<const float>::token_major(Qt.data(), L.kv * L.G, L.w, L.d);
  const token_scores t = sc.score(0, tm, {}, shape);
  expect_same(t, ref, 0.0);
  EXPECT_EQ(t.entropy_sum, ref.entropy_sum);

  // Interleaved dims (stride_dim 2) and a padded token stride also work.
  const index_t st = 2 * L.d + 3;
  std::vector<float> Ks(static_cast<size_t>(L.kv * L.n * st), 7.0f), Vs(Ks.size(), 0.0f);
  for (index_t h = 0; h < L.kv; ++h)
    for (index_t t2 = 0; t2 < L.n; ++t2)
      for (index_t x = 0; x < L.d; ++x)
        Ks[static_cast<size_t>(h * L.n * st + t2 * st + 2 * x)] = L.k(h, t2, x);
  layer_kv<float> sv = L.view();
  sv.keys = view3<float>(Ks.data(), L.kv, L.n, L.d, L.n * st, st, 2);
  sv.values = view3<float>(Vs.data(), L.kv, L.n, L.d, L.n * st, st, 2);
  expect_same(sc.score(0, sv, {}, shape), ref, 0.0);
}

TEST(ScoreWindowAttention, ResultDoesNotDependOnTheThreadCount) {
  layer_data L(3, 2, 1100, 8, 16);  // 5 key blocks: work is split over (KV head, block) tasks
  L.randomize(77);
  const kvtrim::window_attention per{pooling::avg, 5, aggregation::per_kv_head, true};
  const kvtrim::cake_scores cake;
  const kvtrim::window_attention shared{pooling::max, 3, aggregation::shared};
  const std::vector<int> heads = {0, 3, 4};
#if defined(_OPENMP)
  const int before = omp_get_max_threads();
  omp_set_num_threads(1);
#endif
  const token_scores a = per.score(0, L.view(), heads, L.shape());
  const token_scores b = cake.score(0, L.view(), heads, L.shape());
  const token_scores c = shared.score(0, L.view(), heads, L.shape());
#if defined(_OPENMP)
  omp_set_num_threads(7);
#endif
  expect_same(per.score(0, L.view(), heads, L.shape()), a, 0.0);
  expect_same(cake.score(0, L.view(), heads, L.shape()), b, 0.0);
  expect_same(shared.score(0, L.view(), heads, L.shape()), c, 0.0);
  EXPECT_EQ(per.score(0, L.view(), heads, L.shape()).entropy_sum, a.entropy_sum);
#if defined(_OPENMP)
  omp_set_num_threads(before);
#endif
}

TEST(ScoreWindowAttention, WindowAsLongAsThePromptLeavesNoCandidates) {
  layer_data L(1, 2, 6, 6, 4);
  L.randomize(2);
  const token_scores s = kvtrim::window_attention{}.score(0, L.view(), {}, L.shape());
  EXPECT_EQ(s.candidates, 0);
  EXPECT_TRUE(s.values.empty());
}

TEST(ScoreWindowAttention, LayerStatsOnlyWhenAsked) {
  layer_data L(2, 2, 50, 4, 8);
  L.randomize(9);
  const token_scores off = kvtrim::window_attention{}.score(0, L.view(), {}, L.shape());
  EXPECT_EQ(off.entropy_sum, 0.0);
  EXPECT_EQ(off.variance_sum, 0.0);
  EXPECT_EQ(off.stat_heads, 0.0);
  kvtrim::window_attention on;
  on.layer_stats = true;
  const token_scores s = on.score(0, L.view(), {}, L.shape());
  const token_scores c = kvtrim::cake_scores{}.score(0, L.view(), {}, L.shape());
  EXPECT_GT(s.entropy_sum, 0.0);
  EXPECT_DOUBLE_EQ(s.entropy_sum, c.entropy_sum);
  EXPECT_DOUBLE_EQ(s.variance_sum, c.variance_sum);
  EXPECT_EQ(s.stat_heads, 4.0);
  expect_same(s, off, 0.0);  // the stats never change the scores
}

// ---------------------------------------------------------------- CAKE

TEST(ScoreCake, IndicatorIsMeanPlusGammaVarianceOfTheWindowAttention) {
  layer_data L(2, 3, 300, 6, 16);
  L.randomize(66, 1.0f, 1.5f);
  const std::vector<int> heads = {0, 2, 4};  // group 0: {0, 2}; group 1: {4}
  for (double gamma : {0.0, 200.0}) {
    const kvtrim::cake_scores sc{gamma};
    const token_scores s = sc.score(0, L.view(), heads, L.shape());
    ASSERT_EQ(s.rows(), 2);
    expect_row_near(s, 0, ref_row(L, {0, 2}, pooling::avg, 5, true, gamma), 1e-5);
    expect_row_near(s, 1, ref_row(L, {4}, pooling::avg, 5, true, gamma), 1e-5);
  }
}

TEST(ScoreCake, VarianceFavoursTokensWhoseAttentionShifts) {
  // Token 2 gets steady attention from every window query, token 6 a burst from one query.
  // By the mean token 2 wins; CAKE's variance term prefers the shifting token 6.
  layer_data L(1, 1, 16, 4, 8);
  for (index_t x = 0; x < 8; ++x) L.k(0, 2, x) = (x == 0) ? 4.0f : 0.0f;
  L.k(0, 6, 1) = 8.0f;
  for (index_t i = 0; i < 4; ++i) L.q(0, i, 0) = 1.0f;  // logit(2) = 4/sqrt(8)
  L.q(0, 0, 1) = 1.0f;                                  // only query 0 sees token 6
  const kvtrim::cake_scores sc{200.0, pooling::none, 1};
  const token_scores s = sc.score(0, L.view(), {}, L.shape());
  const auto a = ref_attention(L, 0);
  EXPECT_GT(s.row(0)[6], s.row(0)[2]);
  const token_scores g0 =
      kvtrim::cake_scores{0.0, pooling::none, 1}.score(0, L.view(), {}, L.shape());
  double m6 = 0;
  for (index_t i = 0; i < 4; ++i) m6 += a[static_cast<size_t>(i)][6] / 4;
  EXPECT_NEAR(g0.row(0)[6], m6, 1e-6);  // gamma = 0: the plain mean
  EXPECT_GT(g0.row(0)[2], g0.row(0)[6]);
}

TEST(ScoreCake, EntropyOfUniformAndOneHotAttention) {
  // Uniform: all logits 0. With w = 1 the single query sees all n keys, a = 1/n, and CAKE's
  // dispersion over the n - 1 candidates is (n - 1)/n * log n (official: A[-w:, :-w], not
  // renormalised).
  const index_t n = 33;
  layer_data U(1, 2, n, 1, 8);
  const token_scores u = kvtrim::cake_scores{}.score(0, U.view(), {}, U.shape());
  const double per_head = (n - 1.0) / n * std::log(double(n));
  EXPECT_NEAR(u.entropy_sum, 2 * per_head, 1e-5);
  EXPECT_EQ(u.stat_heads, 2.0);
  EXPECT_EQ(u.variance_sum, 0.0);  // one window query: no temporal shift

  // Uniform with w = 4: query i sees c + i + 1 keys; entropy averaged over the window.
  layer_data W(1, 1, n, 4, 8);
  const token_scores uw = kvtrim::cake_scores{}.score(0, W.view(), {}, W.shape());
  const index_t c = n - 4;
  double ent = 0, mean = 0, var = 0;
  for (index_t i = 0; i < 4; ++i) {
    ent += double(c) / (c + i + 1) * std::log(double(c + i + 1)) / 4;
    mean += 1.0 / (c + i + 1) / 4;
  }
  for (index_t i = 0; i < 4; ++i) var += std::pow(1.0 / (c + i + 1) - mean, 2) / 3;
  EXPECT_NEAR(uw.entropy_sum, ent, 1e-5);
  EXPECT_NEAR(uw.variance_sum, c * var, 1e-9);

  // One-hot: every query attends only to token 0.
  layer_data O(1, 2, n, 4, 8);
  for (index_t x = 0; x < 8; ++x) O.k(0, 0, x) = 20.0f;
  for (index_t h = 0; h < 2; ++h)
    for (index_t i = 0; i < 4; ++i)
      for (index_t x = 0; x < 8; ++x) O.q(h, i, x) = 1.0f;
  const token_scores o = kvtrim::cake_scores{}.score(0, O.view(), {}, O.shape());
  EXPECT_NEAR(o.entropy_sum, 0.0, 1e-4);
  EXPECT_NEAR(o.variance_sum, 0.0, 1e-8);
  EXPECT_GT(uw.entropy_sum, 1.0);
}

// ---------------------------------------------------------------- StreamingLLM, random

TEST(ScoreStreaming, KeepsSinksThenTheMostRecentTokens) {
  layer_data L(2, 2, 20, 4, 4);  // candidates 0..15
  L.randomize(1);
  const token_scores s = kvtrim::streaming{}.score(0, L.view(), {}, L.shape());
  ASSERT_EQ(s.rows(), 2);
  const std::vector<index_t> want = {0, 1, 2, 3, 12, 13, 14, 15};
  EXPECT_EQ(top_k(s.row(0), s.candidates, 8), want);
  EXPECT_EQ(top_k(s.row(1), s.candidates, 8), want);
  const std::vector<index_t> two = {0, 1};  // fewer slots than sinks: the earliest sinks
  EXPECT_EQ(top_k(s.row(0), s.candidates, 2), two);
  kvtrim::streaming no_sinks{0, aggregation::shared};
  const token_scores r = no_sinks.score(0, L.view(), {}, L.shape());
  ASSERT_EQ(r.rows(), 1);
  const std::vector<index_t> recent = {11, 12, 13, 14, 15};
  EXPECT_EQ(top_k(r.row(0), r.candidates, 5), recent);
}

TEST(ScoreRandom, DeterministicPerSeedLayerAndGlobalKvHead) {
  layer_data L(4, 2, 100, 4, 4);
  L.randomize(1);
  const model_shape shape = L.shape(3);
  const kvtrim::random_scores r1{42}, r2{43};
  const token_scores a = r1.score(1, L.view(), {}, shape);
  const token_scores b = r1.score(1, L.view(), {}, shape);
  const token_scores c = r2.score(1, L.view(), {}, shape);
  const token_scores d = r1.score(2, L.view(), {}, shape);
  expect_same(a, b, 0.0);
  size_t diff_seed = 0, diff_layer = 0, diff_head = 0;
  for (size_t i = 0; i < a.values.size(); ++i) {
    ASSERT_GE(a.values[i], 0.0f);
    ASSERT_LT(a.values[i], 1.0f);
    diff_seed += a.values[i] != c.values[i];
    diff_layer += a.values[i] != d.values[i];
  }
  for (index_t j = 0; j < a.candidates; ++j) diff_head += a.row(0)[j] != a.row(1)[j];
  EXPECT_GT(diff_seed, a.values.size() * 9 / 10);
  EXPECT_GT(diff_layer, a.values.size() * 9 / 10);
  EXPECT_GT(diff_head, static_cast<size_t>(a.candidates) * 9 / 10);
  // A shard's rows are those of the same global KV heads on one rank.
  const token_scores s = r1.score(1, L.shard(2, 2), {}, shape);
  for (index_t j = 0; j < a.candidates; ++j) ASSERT_EQ(s.row(0)[j], a.row(2)[j]);
  // The shared row is the same on every shard.
  const kvtrim::random_scores rs{42, aggregation::shared};
  const token_scores s0 = rs.score(1, L.shard(0, 2), {}, shape);
  const token_scores s1 = rs.score(1, L.shard(2, 2), {}, shape);
  expect_same(s0, s1, 0.0);
}

// ---------------------------------------------------------------- bad input

TEST(ScoreBadInput, RejectedWithTheBadValueNamed) {
  layer_data L(2, 2, 16, 4, 8);
  L.randomize(3);
  const model_shape shape = L.shape();
  const kvtrim::window_attention ok;
  auto expect_error = [](auto&& f, const char* needle) {
    try {
      f();
      ADD_FAILURE() << "no error, expected one mentioning '" << needle << "'";
    } catch (const kvtrim::error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  // Window larger than the prompt.
  expect_error(
      [&] {
        layer_kv<float> in = L.view();
        in.length = 3;
        ok.score(0, in, {}, shape);
      },
      "window 4");
  // Even or zero kernels.
  expect_error(
      [&] {
        kvtrim::window_attention{pooling::avg, 4}.score(0, L.view(), {}, shape);
      },
      "kernel 4");
  expect_error(
      [&] {
        kvtrim::window_attention{pooling::max, 0}.score(0, L.view(), {}, shape);
      },
      "kernel 0");
  expect_error(
      [&] {
        kvtrim::cake_scores{200.0, pooling::avg, 2}.score(0, L.view(), {}, shape);
      },
      "kernel 2");
  expect_error([&] { kvtrim::window_attention{pooling::avg, 6}.validate(); }, "kernel 6");
  expect_error([&] { kvtrim::cake_scores{-1.0}.score(0, L.view(), {}, shape); }, "gamma -1");
  expect_error([&] { kvtrim::streaming{-2}.score(0, L.view(), {}, shape); }, "sinks -2");
  // Heads out of range or not ascending.
  expect_error([&] { ok.score(0, L.view(), {0, 4}, shape); }, "query head 4");
  expect_error([&] { ok.score(0, L.view(), {-1}, shape); }, "query head -1");
  expect_error([&] { ok.score(0, L.view(), {2, 1}, shape); }, "2 before 1");
  expect_error([&] { ok.score(0, L.view(), {1, 1}, shape); }, "1 before 1");
  // Layer outside the model.
  expect_error([&] { ok.score(2, L.view(), {}, shape); }, "layer 2");
  expect_error([&] { kvtrim::random_scores{}.score(-1, L.view(), {}, shape); }, "layer -1");
  // Views that disagree with the model.
  model_shape wrong_dim = shape;
  wrong_dim.head_dim = 16;
  expect_error([&] { ok.score(0, L.view(), {}, wrong_dim); }, "head_dim 8");
  model_shape wrong_g = shape;
  wrong_g.q_heads = 8;  // G = 4, the views hold 4 query heads for 2 KV heads
  expect_error([&] { ok.score(0, L.view(), {}, wrong_g); }, "4 query heads");
  model_shape short_ctx = shape;
  short_ctx.context = 10;
  expect_error([&] { kvtrim::streaming{}.score(0, L.view(), {}, short_ctx); }, "16 tokens");
  expect_error(
      [&] {
        layer_kv<float> in = L.view();
        in.kv_head_offset = 1;  // KV heads [1, 3) of a model with 2
        ok.score(0, in, {}, shape);
      },
      "exceed the model's 2 KV heads");
  model_shape few_kv = shape;
  few_kv.kv_heads = 1;
  few_kv.q_heads = 2;
  expect_error([&] { ok.score(0, L.view(), {}, few_kv); }, "exceed the model's 1 KV heads");
}

// The defect snapkv-paper / pyramidkv-paper reproduce, on constructed input: 2 KV heads x G = 2.
// Query head h reads KV head h / G; each attends to one planted token of its KV head's keys:
// head 0 -> token 1, head 1 -> token 2 (KV head 0), head 2 -> token 3, head 3 -> token 4 (KV
// head 1). Grouped right, KV head 0's row is high at tokens 1 and 2 (its own queries); the
// release's reshape [H] -> [G][KV] + mean over G scores KV head 0 by heads 0 and 2: tokens 1 and 3.
TEST(ScoreMisgrouped, KvHeadScoredByTheWrongQueryHeads) {
  layer_data L(2, 2, 12, 2, 4);
  L.k(0, 1, 0) = 10.0f;  // KV head 0: token 1 along x0, token 2 along x1
  L.k(0, 2, 1) = 10.0f;
  L.k(1, 3, 0) = 10.0f;  // KV head 1: token 3 along x0, token 4 along x1
  L.k(1, 4, 1) = 10.0f;
  for (index_t i = 0; i < L.w; ++i) {
    L.q(0, i, 0) = L.q(2, i, 0) = 1.0f;  // heads 0 and 2 look along x0
    L.q(1, i, 1) = L.q(3, i, 1) = 1.0f;  // heads 1 and 3 along x1
  }
  const model_shape shape = L.shape(1);
  const token_scores right = kvtrim::window_attention{pooling::none, 1}.score(0, L.view(), {}, shape);
  const token_scores wrong = kvtrim::misgrouped_window_attention{pooling::none, 1}.score(0, L.view(), {}, shape);
  ASSERT_EQ(wrong.rows(), 2);
  ASSERT_EQ(wrong.candidates, 10);
  auto top2 = [](const token_scores& s, index_t r) {
    std::vector<index_t> idx(static_cast<size_t>(s.candidates));
    for (index_t j = 0; j < s.candidates; ++j) idx[static_cast<size_t>(j)] = j;
    std::sort(idx.begin(), idx.end(), [&](index_t a, index_t b) { return s.row(r)[a] > s.row(r)[b]; });
    std::vector<index_t> t(idx.begin(), idx.begin() + 2);
    std::sort(t.begin(), t.end());
    return t;
  };
  EXPECT_EQ(top2(right, 0), (std::vector<index_t>{1, 2}));
  EXPECT_EQ(top2(right, 1), (std::vector<index_t>{3, 4}));
  EXPECT_EQ(top2(wrong, 0), (std::vector<index_t>{1, 3}));  // heads 0 and 2
  EXPECT_EQ(top2(wrong, 1), (std::vector<index_t>{2, 4}));  // heads 1 and 3
  // Row j is the sum of query heads j, j + KV of the right per-head scores (heads = {h} alone).
  for (index_t r = 0; r < 2; ++r)
    for (index_t j = 0; j < 10; ++j) {
      double want = 0;
      for (int h : {static_cast<int>(r), static_cast<int>(r + 2)}) {
        const token_scores one = kvtrim::window_attention{pooling::none, 1}.score(0, L.view(), {h}, shape);
        want += one.row(h / 2)[j];
      }
      EXPECT_NEAR(wrong.row(r)[j], want, 1e-5) << r << "/" << j;
    }
  EXPECT_EQ(kvtrim::misgrouped_row(5, 3), 2);
  // A tensor-parallel shard cannot reproduce it (the wrong rows cross shards): refused.
  EXPECT_THROW(kvtrim::misgrouped_window_attention{}.score(0, L.shard(1, 1), {}, shape), kvtrim::error);
  // The registry's reproductions: named, never evaluated by default.
  for (const char* m : {"snapkv-paper", "pyramidkv-paper"}) {
    EXPECT_FALSE(kvtrim::find_method(m).evaluated_by_default) << m;
    EXPECT_NE(kvtrim::find_method(m).paper.find("defect reproduction"), std::string::npos) << m;
  }
}

}  // namespace
