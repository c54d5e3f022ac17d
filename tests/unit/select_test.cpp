// Head selectors: every head; CompressKV's top-k semantic retrieval heads per layer (ties to the
// lower id, ascending output, shape checks), and a planted retrieval head deciding a shared row.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "kvtrim/core/layer_kv.hpp"
#include "kvtrim/core/shape.hpp"
#include "kvtrim/score/window_attention.hpp"
#include "kvtrim/select/all_heads.hpp"
#include "kvtrim/select/retrieval_heads.hpp"

namespace {

using kvtrim::index_t;
using kvtrim::model_shape;

model_shape make_shape(int layers, int q_heads, int kv_heads, int head_dim = 8) {
  model_shape s;
  s.layers = layers;
  s.q_heads = q_heads;
  s.kv_heads = kv_heads;
  s.head_dim = head_dim;
  return s;
}

template <class F>
void expect_error(F&& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no error, expected one mentioning '" << needle << "'";
  } catch (const kvtrim::error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(SelectAllHeads, EveryQueryHeadAscending) {
  const model_shape s = make_shape(3, 6, 2);
  const std::vector<int> want = {0, 1, 2, 3, 4, 5};
  for (int l = 0; l < 3; ++l) EXPECT_EQ(kvtrim::all_heads{}.heads(l, s), want);
  expect_error([&] { kvtrim::all_heads{}.heads(3, s); }, "layer 3");
  expect_error([&] { kvtrim::all_heads{}.heads(-1, s); }, "layer -1");
  expect_error([&] { kvtrim::all_heads{}.heads(0, make_shape(1, 6, 4)); }, "q_heads = 6");
}

TEST(SelectRetrievalHeads, TopKPerLayerAscending) {
  const model_shape s = make_shape(2, 8, 2);
  const kvtrim::retrieval_heads sel(
      {{0.1, 0.9, 0.3, 0.8, 0.05, 0.7, 0.2, 0.6}, {5.0, 1.0, 2.0, 3.0, 4.0, 6.0, 7.0, 0.0}});
  EXPECT_EQ(sel.k(), 4);  // CompressKV's default
  EXPECT_EQ(sel.heads(0, s), (std::vector<int>{1, 3, 5, 7}));
  EXPECT_EQ(sel.heads(1, s), (std::vector<int>{0, 4, 5, 6}));
  EXPECT_EQ(kvtrim::retrieval_heads(sel.scores(), 1).heads(1, s), (std::vector<int>{6}));
  EXPECT_EQ(kvtrim::retrieval_heads(sel.scores(), 8).heads(0, s),
            (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7}));
}

TEST(SelectRetrievalHeads, TiesGoToTheLowerHeadId) {
  const model_shape s = make_shape(1, 6, 3);
  // Heads 1, 2, 4, 5 tie at 0.5 below head 3; k = 3 takes 3 then 1, 2 (lower ids first).
  const kvtrim::retrieval_heads sel({{0.1, 0.5, 0.5, 0.9, 0.5, 0.5}}, 3);
  EXPECT_EQ(sel.heads(0, s), (std::vector<int>{1, 2, 3}));
  const kvtrim::retrieval_heads flat({{0.0, 0.0, 0.0, 0.0, 0.0, 0.0}}, 2);
  EXPECT_EQ(flat.heads(0, s), (std::vector<int>{0, 1}));
  // -inf is an ordinary (lowest) score.
  const kvtrim::retrieval_heads low({{-INFINITY, 1.0, -INFINITY, 0.0, 2.0, -1.0}}, 4);
  EXPECT_EQ(low.heads(0, s), (std::vector<int>{1, 3, 4, 5}));
}

TEST(SelectRetrievalHeads, BadInputRejected) {
  const model_shape s = make_shape(2, 4, 2);
  const std::vector<std::vector<double>> ok = {{1, 2, 3, 4}, {4, 3, 2, 1}};
  expect_error([&] { kvtrim::retrieval_heads(ok, 0); }, "k = 0");
  expect_error([&] { kvtrim::retrieval_heads(ok, -3); }, "k = -3");
  expect_error([&] { kvtrim::retrieval_heads(ok, 5).heads(0, s); },
               "k = 5 outside [1, q_heads = 4]");
  // Score tables of the wrong shape: layers, then heads of one layer.
  expect_error(
      [&] {
        kvtrim::retrieval_heads({{1, 2, 3, 4}}).heads(0, s);
      },
      "1 layers, the model has 2");
  expect_error(
      [&] {
        kvtrim::retrieval_heads({{1, 2, 3, 4}, {1, 2, 3}}).heads(0, s);
      },
      "layer 1 has 3 heads, the model has 4");
  expect_error(
      [&] {
        kvtrim::retrieval_heads({{1, 2, 3, 4, 5}, {1, 2, 3, 4}}).heads(1, s);
      },
      "layer 0 has 5 heads");
  expect_error(
      [&] {
        kvtrim::retrieval_heads({{1, NAN, 3, 4}, {1, 2, 3, 4}});
      },
      "layer 0 head 1 is NaN");
  expect_error([&] { kvtrim::retrieval_heads(ok).heads(2, s); }, "layer 2");
}

TEST(SelectRetrievalHeads, PlantedRetrievalHeadDecidesTheSharedRow) {
  // Two KV heads, G = 2, one layer. Query head 2 (the retrieval head) attends to token 10; every
  // other head to token 30. With the top-1 retrieval head and a shared row, token 10 wins; with
  // all heads, token 30 does.
  const index_t kv = 2, G = 2, n = 48, w = 4, d = 8;
  std::vector<float> K(static_cast<size_t>(kv * n * d), 0.0f), V(K.size(), 0.0f),
      Q(static_cast<size_t>(kv * G * w * d), 0.0f);
  auto k_at = [&](index_t h, index_t t, index_t x) -> float& {
    return K[static_cast<size_t>((h * n + t) * d + x)];
  };
  for (index_t h = 0; h < kv; ++h) {
    k_at(h, 10, 0) = 10.0f;
    k_at(h, 30, 1) = 10.0f;
  }
  for (index_t q = 0; q < kv * G; ++q)
    for (index_t i = 0; i < w; ++i)
      Q[static_cast<size_t>((q * w + i) * d + (q == 2 ? 0 : 1))] = 1.0f;
  kvtrim::layer_kv<float> in;
  in.keys = kvtrim::view3<float>::head_major(K.data(), kv, n, d);
  in.values = kvtrim::view3<float>::head_major(V.data(), kv, n, d);
  in.queries = kvtrim::view3<const float>::head_major(Q.data(), kv * G, w, d);
  const model_shape s = make_shape(1, 4, 2, 8);

  const kvtrim::retrieval_heads sel({{0.1, 0.2, 0.95, 0.3}}, 1);
  ASSERT_EQ(sel.heads(0, s), (std::vector<int>{2}));
  const kvtrim::window_attention shared{kvtrim::pooling::none, 1, kvtrim::aggregation::shared};
  const kvtrim::token_scores r = shared.score(0, in, sel.heads(0, s), s);
  const kvtrim::token_scores a = shared.score(0, in, kvtrim::all_heads{}.heads(0, s), s);
  auto argmax = [](const kvtrim::token_scores& t) {
    return std::max_element(t.row(0), t.row(0) + t.candidates) - t.row(0);
  };
  EXPECT_EQ(argmax(r), 10);
  EXPECT_EQ(argmax(a), 30);
}

}  // namespace
