// Key re-rotation after eviction (compact_in_place::rerotate_keys, method_spec::rerotate_keys):
// a key computed at position p and moved to row i of a head keeping len of n tokens must equal
// the key computed at position n - len + i (packed up to the prompt's end), for
// both RoPE pairings, through strided views and in half precision; values never change; a
// second compaction (CAKE's re-trim) rotates relative to the rows it finds; bad input leaves the
// views untouched. The reference rotation here is written out independently of the library's.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "expect_error.hpp"
#include "kvtrim/kvtrim.hpp"

namespace {

using kvtrim::index_t;
using pairing = kvtrim::rope_spec::pairing;

// RoPE at position p of one raw [d] vector, as a model computes it.
std::vector<float> rope_at(const std::vector<float>& raw, double p, double base, pairing pairs) {
  const auto d = static_cast<index_t>(raw.size());
  std::vector<float> out = raw;
  for (index_t i = 0; i < d / 2; ++i) {
    const double a = p * std::pow(base, -2.0 * double(i) / double(d));
    const index_t x = pairs == pairing::halves ? i : 2 * i, y = pairs == pairing::halves ? i + d / 2 : 2 * i + 1;
    out[size_t(x)] = float(raw[size_t(x)] * std::cos(a) - raw[size_t(y)] * std::sin(a));
    out[size_t(y)] = float(raw[size_t(x)] * std::sin(a) + raw[size_t(y)] * std::cos(a));
  }
  return out;
}

// H heads x n tokens of raw keys, stored after RoPE at their positions, token-major [t][h][d]
// (the layout of most engines) so the views are strided.
struct rotated_layer {
  index_t H, n, d;
  double base = 10000.0;
  pairing pairs;
  std::vector<std::vector<float>> raw;  // [h * n + t] -> [d]
  std::vector<float> k, v;
  rotated_layer(index_t H_, index_t n_, index_t d_, pairing p, unsigned seed) : H(H_), n(n_), d(d_), pairs(p) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> g(0.f, 1.f);
    k.resize(size_t(H * n * d));
    v.resize(k.size());
    for (index_t h = 0; h < H; ++h)
      for (index_t t = 0; t < n; ++t) {
        std::vector<float> r(static_cast<size_t>(d));
        for (auto& x : r) x = g(rng);
        raw.push_back(r);
        const std::vector<float> rot = rope_at(r, double(t), base, pairs);
        for (index_t j = 0; j < d; ++j) {
          k[size_t((t * H + h) * d + j)] = rot[size_t(j)];
          v[size_t((t * H + h) * d + j)] = float(h * 1000 + t) + 0.001f * float(j);
        }
      }
  }
  kvtrim::layer_kv<float> views() {
    kvtrim::layer_kv<float> kv;
    kv.keys = kvtrim::view3<float>::token_major(k.data(), H, n, d);
    kv.values = kvtrim::view3<float>::token_major(v.data(), H, n, d);
    kv.rope.base = base;
    kv.rope.pairs = pairs;
    return kv;
  }
  float key(index_t h, index_t row, index_t j) const { return k[size_t((row * H + h) * d + j)]; }
};

const kvtrim::selection kKeep{{{1, 4, 5, 10, 11}, {0, 2, 9, 10, 11}}};  // window [10, 12) last

TEST(Rerotate, MovedKeysEqualKeysComputedAtTheirNewRowsForBothPairings) {
  for (pairing p : {pairing::halves, pairing::adjacent}) {
    rotated_layer L(2, 12, 8, p, 7u);
    const std::vector<float> v0 = L.v;
    const std::vector<index_t> len = kvtrim::compact_in_place{true}.apply(kKeep, L.views());
    ASSERT_EQ(len, (std::vector<index_t>{5, 5}));
    for (index_t h = 0; h < 2; ++h)
      for (index_t i = 0; i < 5; ++i) {
        const index_t t = kKeep.keep[size_t(h)][size_t(i)];
        const std::vector<float> want = rope_at(L.raw[size_t(h * L.n + t)], double(12 - 5 + i), L.base, p);
        for (index_t j = 0; j < L.d; ++j) {
          EXPECT_NEAR(L.key(h, i, j), want[size_t(j)], 2e-6f) << "head " << h << " row " << i << " dim " << j;
          EXPECT_EQ(L.v[size_t((i * 2 + h) * L.d + j)], v0[size_t((t * 2 + h) * L.d + j)]);  // values: moved, bit for bit
        }
      }
  }
}

TEST(Rerotate, OffByDefaultAndAKeptPrefixIsUntouched) {
  rotated_layer a(2, 12, 8, pairing::halves, 3u), b = a;
  const std::vector<float> k0 = a.k;
  kvtrim::compact_in_place{}.apply(kKeep, a.views());
  kvtrim::compact_in_place{true}.apply(kKeep, b.views());
  // Without re-rotation the rows are the gathered originals; with it, the window's rows (tokens
  // 10 and 11 in rows 3 and 4, at positions 12 - 5 + 3 and + 4: delta 0) are bit-identical, and
  // head 1's row 0 (token 0, not moved but now at position 7) is turned.
  for (index_t h = 0; h < 2; ++h)
    for (index_t j = 0; j < 8; ++j) {
      EXPECT_EQ(a.key(h, 3, j), b.key(h, 3, j));
      EXPECT_EQ(a.key(h, 4, j), b.key(h, 4, j));
    }
  for (index_t j = 0; j < 8; ++j) EXPECT_EQ(a.key(0, 0, j), k0[size_t((1 * 2 + 0) * 8 + j)]);  // head 0 row 0 <- token 1
  EXPECT_NE(a.key(1, 0, 1), b.key(1, 0, 1));
}

TEST(Rerotate, ASecondCompactionRotatesFromTheRowsItFinds) {
  // CAKE's re-trim compacts already compacted rows: row j of the 3 left must hold the key at
  // position 12 - 3 + j whatever the two steps' deltas were.
  rotated_layer L(2, 12, 8, pairing::halves, 11u);
  const kvtrim::compact_in_place ex{true};
  ex.apply(kKeep, L.views());
  kvtrim::layer_kv<float> kv = L.views();
  kv.length = 5;
  const kvtrim::selection second{{{2, 3, 4}, {0, 3, 4}}};
  ex.apply(second, kv);
  for (index_t h = 0; h < 2; ++h)
    for (index_t jr = 0; jr < 3; ++jr) {
      const index_t t = kKeep.keep[size_t(h)][size_t(second.keep[size_t(h)][size_t(jr)])];
      const std::vector<float> want = rope_at(L.raw[size_t(h * L.n + t)], double(12 - 3 + jr), L.base, pairing::halves);
      for (index_t j = 0; j < 8; ++j) EXPECT_NEAR(L.key(h, jr, j), want[size_t(j)], 4e-6f);
    }
}

TEST(Rerotate, HalfPrecisionKeysStayWithinTheirRounding) {
  rotated_layer L(2, 12, 8, pairing::halves, 5u);
  std::vector<kvtrim::half> k(L.k.size()), v(L.v.size());
  for (size_t i = 0; i < k.size(); ++i) k[i] = kvtrim::from_float<kvtrim::half>(L.k[i]), v[i] = kvtrim::from_float<kvtrim::half>(L.v[i]);
  kvtrim::layer_kv<kvtrim::half> kv;
  kv.keys = kvtrim::view3<kvtrim::half>::token_major(k.data(), 2, 12, 8);
  kv.values = kvtrim::view3<kvtrim::half>::token_major(v.data(), 2, 12, 8);
  kv.rope.base = L.base;
  kvtrim::compact_in_place{true}.apply(kKeep, kv);
  for (index_t h = 0; h < 2; ++h)
    for (index_t i = 0; i < 5; ++i) {
      const std::vector<float> want =
          rope_at(L.raw[size_t(h * 12 + kKeep.keep[size_t(h)][size_t(i)])], double(7 + i), L.base, pairing::halves);
      for (index_t j = 0; j < 8; ++j)  // two half roundings of values |x| < ~4: < 4e-3
        EXPECT_NEAR(kvtrim::to_float(k[size_t((i * 2 + h) * 8 + j)]), want[size_t(j)], 4e-3f);
    }
}

TEST(Rerotate, WithoutTheModelsRopeOrWithAnOddDimNothingMoves) {
  rotated_layer L(2, 12, 8, pairing::halves, 9u);
  const std::vector<float> k0 = L.k, v0 = L.v;
  kvtrim::layer_kv<float> kv = L.views();
  kv.rope = {};
  EXPECT_ERROR_HAS(kvtrim::compact_in_place{true}.apply(kKeep, kv), "needs the model's RoPE");
  EXPECT_EQ(L.k, k0);
  EXPECT_EQ(L.v, v0);
  kv = L.views();
  kv.keys = kvtrim::view3<float>(L.k.data(), 2, 12, 7, 8, 16, 1);  // 7 of each row's 8 dims
  kv.values = kvtrim::view3<float>(L.v.data(), 2, 12, 7, 8, 16, 1);
  EXPECT_ERROR_HAS(kvtrim::compact_in_place{true}.apply(kKeep, kv), "even head_dim");
  EXPECT_EQ(L.k, k0);
  EXPECT_EQ(L.v, v0);
}

}  // namespace
