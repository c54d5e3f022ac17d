// Top-k selection and the eviction executors (compact_in_place, copy_to) on constructed inputs:
// hand-worked selections, and executor invariants checked element by element against
// gather-by-index on a snapshot of the original memory.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "kvtrim/evict/compact_in_place.hpp"
#include "kvtrim/evict/copy_to.hpp"
#include "kvtrim/evict/top_k.hpp"

namespace {

using kvtrim::index_t;
using kvtrim::selection;
using kvtrim::token_scores;

// ---------------------------------------------------------------------------------------------
// select_top

token_scores scores_of(bool shared, index_t heads, index_t w, const std::vector<float>& values) {
  const index_t rows = shared ? 1 : heads;
  const index_t c = static_cast<index_t>(values.size()) / rows;
  token_scores s = token_scores::make(shared, heads, 0, c + w, w);
  s.values = values;
  return s;
}

TEST(SelectTop, TiesGoToTheLowerIndex) {
  // n = 8, w = 2: candidates 0..5. Four tokens tie at 5; budget 4 keeps 2 of them: the lowest.
  const token_scores s = scores_of(false, 1, 2, {1, 5, 5, 5, 2, 5});
  const selection sel = kvtrim::select_top(s, {4});
  ASSERT_EQ(sel.keep.size(), 1u);
  EXPECT_EQ(sel.keep[0], (std::vector<index_t>{1, 2, 6, 7}));
  // One more slot takes the next tie (3), not the later 5.
  EXPECT_EQ(kvtrim::select_top(s, {5}).keep[0], (std::vector<index_t>{1, 2, 3, 6, 7}));
}

TEST(SelectTop, AllTiedKeepsThePrefix) {
  const token_scores s = scores_of(false, 1, 1, std::vector<float>(10, 0.5f));
  EXPECT_EQ(kvtrim::select_top(s, {4}).keep[0], (std::vector<index_t>{0, 1, 2, 10}));
}

TEST(SelectTop, BudgetAtLeastNKeepsEverything) {
  const token_scores s = scores_of(false, 1, 3, {3, 1, 2, 0, 9});  // n = 8
  std::vector<index_t> all(8);
  std::iota(all.begin(), all.end(), 0);
  EXPECT_EQ(kvtrim::select_top(s, {8}).keep[0], all);
  EXPECT_EQ(kvtrim::select_top(s, {1000}).keep[0], all);
}

TEST(SelectTop, BudgetAtMostWindowKeepsOnlyTheWindow) {
  const token_scores s = scores_of(false, 1, 3, {3, 1, 2, 0, 9});  // n = 8, window 5..7
  const std::vector<index_t> window{5, 6, 7};
  EXPECT_EQ(kvtrim::select_top(s, {3}).keep[0], window);  // b = w
  EXPECT_EQ(kvtrim::select_top(s, {1}).keep[0], window);  // b < w is clipped up to w
}

TEST(SelectTop, PerHeadRowsAndBudgets) {
  // Two KV heads, own rows, n = 6, w = 1, candidates 0..4.
  const token_scores s = scores_of(false, 2, 1, {0, 9, 1, 8, 2,    // head 0: best 1, 3, 4
                                                  7, 0, 6, 0, 5});  // head 1: best 0, 2, 4
  const selection sel = kvtrim::select_top(s, {3, 4});
  EXPECT_EQ(sel.keep[0], (std::vector<index_t>{1, 3, 5}));
  EXPECT_EQ(sel.keep[1], (std::vector<index_t>{0, 2, 4, 5}));
  EXPECT_EQ(sel.lengths(), (std::vector<index_t>{3, 4}));
  EXPECT_EQ(sel.total(), 7);
}

TEST(SelectTop, SharedRowServesEveryHead) {
  const token_scores s = scores_of(true, 3, 2, {4, 0, 3, 1, 2});  // n = 7
  const selection sel = kvtrim::select_top(s, {4, 3, 4});
  EXPECT_EQ(sel.keep[0], (std::vector<index_t>{0, 2, 5, 6}));
  EXPECT_EQ(sel.keep[1], (std::vector<index_t>{0, 5, 6}));
  EXPECT_EQ(sel.keep[2], sel.keep[0]);
}

TEST(SelectTop, InfinitiesAreOrdinaryScores) {
  const float inf = std::numeric_limits<float>::infinity();
  const token_scores s = scores_of(false, 1, 1, {-inf, 1, inf, -inf, 0});
  EXPECT_EQ(kvtrim::select_top(s, {3}).keep[0], (std::vector<index_t>{1, 2, 5}));
  EXPECT_EQ(kvtrim::select_top(s, {5}).keep[0], (std::vector<index_t>{0, 1, 2, 4, 5}));
}

TEST(SelectTop, MatchesAStableSortOnRandomScoresWithTies) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    const index_t heads = 1 + static_cast<index_t>(rng() % 4);
    const index_t w = 1 + static_cast<index_t>(rng() % 8);
    const index_t c = static_cast<index_t>(rng() % 300);
    const bool shared = rng() % 2 == 0;
    std::vector<float> v(static_cast<size_t>((shared ? 1 : heads) * c));
    for (float& x : v) x = static_cast<float>(rng() % 17);  // many ties
    const token_scores s = scores_of(shared, heads, w, v);
    std::vector<index_t> budgets(static_cast<size_t>(heads));
    for (index_t& b : budgets) b = 1 + static_cast<index_t>(rng() % static_cast<unsigned>(c + w + 20));
    const selection sel = kvtrim::select_top(s, budgets);
    for (index_t h = 0; h < heads; ++h) {
      const float* row = s.row_for_head(h);
      std::vector<index_t> order(static_cast<size_t>(c));
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](index_t a, index_t b) { return row[a] > row[b]; });
      const index_t b = std::min(std::max(budgets[static_cast<size_t>(h)], w), c + w);
      std::vector<index_t> expect(order.begin(), order.begin() + (b - w));
      std::sort(expect.begin(), expect.end());
      for (index_t t = c; t < c + w; ++t) expect.push_back(t);
      ASSERT_EQ(sel.keep[static_cast<size_t>(h)], expect) << "trial " << trial << " head " << h;
    }
  }
}

TEST(SelectTop, RejectsBadInput) {
  const token_scores s = scores_of(false, 2, 1, {0, 1, 2, 3, 4, 5});
  EXPECT_THROW(kvtrim::select_top(s, {3}), kvtrim::error);           // one budget for two heads
  EXPECT_THROW(kvtrim::select_top(s, {3, 3, 3}), kvtrim::error);     // three budgets
  EXPECT_THROW(kvtrim::select_top(s, {3, 0}), kvtrim::error);        // budget 0
  EXPECT_THROW(kvtrim::select_top(s, {-2, 3}), kvtrim::error);       // negative budget
  token_scores nan = s;
  nan.values[4] = std::nanf("");
  EXPECT_THROW(kvtrim::select_top(nan, {3, 3}), kvtrim::error);
  token_scores short_values = s;
  short_values.values.pop_back();
  EXPECT_THROW(kvtrim::select_top(short_values, {3, 3}), kvtrim::error);
  token_scores no_heads = s;
  no_heads.kv_heads = 0;
  no_heads.values.clear();
  EXPECT_THROW(kvtrim::select_top(no_heads, {}), kvtrim::error);
  try {
    kvtrim::select_top(s, {3, 0});
    FAIL() << "no throw";
  } catch (const kvtrim::error& e) {
    EXPECT_NE(std::string(e.what()).find("budget 0"), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------------------------------------
// executors

enum class layout { head_major, token_major, padded, dim_strided };
const char* name(layout l) {
  switch (l) {
    case layout::head_major: return "head_major";
    case layout::token_major: return "token_major";
    case layout::padded: return "padded";
    default: return "dim_strided";
  }
}

template <class T>
bool same_bits(const T& a, const T& b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}

// One layer's K and V (plus window queries) in a given memory layout, every element random
// (padding included), with a snapshot of the original memory.
template <class T>
struct layer_buffers {
  index_t H, N, D, n, w;
  layout lay;
  std::vector<T> k, v, q, k0, v0;
  kvtrim::view3<T> kview, vview;

  layer_buffers(layout l, index_t heads, index_t tokens, index_t dim, index_t prompt, index_t window,
                unsigned seed)
      : H(heads), N(tokens), D(dim), n(prompt), w(window), lay(l) {
    index_t sh = 0, st = 0, sd = 1, size = 0;
    switch (l) {
      case layout::head_major: sh = N * D; st = D; size = H * N * D; break;
      case layout::token_major: sh = D; st = H * D; size = H * N * D; break;
      case layout::padded: st = D + 3; sh = N * st + 5; size = H * sh; break;
      case layout::dim_strided: sh = 1; st = H; sd = H * N; size = H * N * D; break;
    }
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> u(-4.0f, 4.0f);
    k.resize(static_cast<size_t>(size));
    v.resize(static_cast<size_t>(size));
    for (T& x : k) x = kvtrim::from_float<T>(u(rng));
    for (T& x : v) x = kvtrim::from_float<T>(u(rng));
    q.resize(static_cast<size_t>(H * w * D), kvtrim::from_float<T>(0.25f));
    k0 = k;
    v0 = v;
    kview = kvtrim::view3<T>(k.data(), H, N, D, sh, st, sd);
    vview = kvtrim::view3<T>(v.data(), H, N, D, sh, st, sd);
  }

  kvtrim::layer_kv<T> layer() {
    kvtrim::layer_kv<T> kv;
    kv.keys = kview;
    kv.values = vview;
    kv.queries = kvtrim::view3<const T>::head_major(q.data(), H, w, D);
    kv.length = n;
    return kv;
  }
  bool untouched() const {
    return std::memcmp(k.data(), k0.data(), k.size() * sizeof(T)) == 0 &&
           std::memcmp(v.data(), v0.data(), v.size() * sizeof(T)) == 0;
  }
  // Offset of (h, t, d) in the buffers.
  index_t at(index_t h, index_t t, index_t d) const {
    return kview.row(h, t) - k.data() + d * kview.stride_dim();
  }
};

// Random selection: each head keeps a random subset of [0, n - w) (density per head random, some
// heads keeping nothing or everything) plus the window.
selection random_selection(index_t H, index_t n, index_t w, std::mt19937& rng) {
  selection sel;
  sel.keep.resize(static_cast<size_t>(H));
  for (index_t h = 0; h < H; ++h) {
    const unsigned mode = rng() % 5;
    const double p = mode == 0 ? 0.0 : mode == 1 ? 1.0 : std::uniform_real_distribution<double>(0, 1)(rng);
    for (index_t t = 0; t < n - w; ++t)
      if (std::bernoulli_distribution(p)(rng)) sel.keep[static_cast<size_t>(h)].push_back(t);
    for (index_t t = n - w; t < n; ++t) sel.keep[static_cast<size_t>(h)].push_back(t);
  }
  return sel;
}

// After compaction: rows [0, len) of head h are the snapshot's rows keep[.], every other element
// of the buffers (rows >= len, tokens >= n, padding) is bit-identical to the snapshot.
template <class T>
void expect_compacted(const layer_buffers<T>& b, const selection& sel, const std::vector<index_t>& lens) {
  ASSERT_EQ(lens, sel.lengths());
  std::vector<char> written(b.k.size(), 0);
  for (index_t h = 0; h < b.H; ++h)
    for (index_t i = 0; i < lens[static_cast<size_t>(h)]; ++i)
      for (index_t d = 0; d < b.D; ++d) {
        const index_t dst = b.at(h, i, d), src = b.at(h, sel.keep[static_cast<size_t>(h)][static_cast<size_t>(i)], d);
        written[static_cast<size_t>(dst)] = 1;
        ASSERT_TRUE(same_bits(b.k[static_cast<size_t>(dst)], b.k0[static_cast<size_t>(src)]))
            << name(b.lay) << " K head " << h << " row " << i << " dim " << d;
        ASSERT_TRUE(same_bits(b.v[static_cast<size_t>(dst)], b.v0[static_cast<size_t>(src)]))
            << name(b.lay) << " V head " << h << " row " << i << " dim " << d;
      }
  for (size_t e = 0; e < b.k.size(); ++e)
    if (!written[e]) {
      ASSERT_TRUE(same_bits(b.k[e], b.k0[e])) << name(b.lay) << " K element " << e << " written past the new length";
      ASSERT_TRUE(same_bits(b.v[e], b.v0[e])) << name(b.lay) << " V element " << e << " written past the new length";
    }
}

template <class T>
void compact_random_cases(unsigned seed) {
  std::mt19937 rng(seed);
  for (layout l : {layout::head_major, layout::token_major, layout::padded, layout::dim_strided})
    for (int trial = 0; trial < 12; ++trial) {
      const index_t H = 1 + static_cast<index_t>(rng() % 4), D = 1 + static_cast<index_t>(rng() % 40);
      const index_t N = 1 + static_cast<index_t>(rng() % 200);
      const index_t n = 1 + static_cast<index_t>(rng() % static_cast<unsigned>(N));  // tokens >= n are padding
      const index_t w = 1 + static_cast<index_t>(rng() % static_cast<unsigned>(std::min<index_t>(n, 8)));
      layer_buffers<T> b(l, H, N, D, n, w, rng());
      const selection sel = random_selection(H, n, w, rng);
      const auto lens = kvtrim::compact_in_place{}.apply(sel, b.layer());
      expect_compacted(b, sel, lens);
    }
}

TEST(CompactInPlace, EqualsGatherByIndexFloat) { compact_random_cases<float>(1); }
TEST(CompactInPlace, EqualsGatherByIndexHalf) { compact_random_cases<kvtrim::half>(2); }
TEST(CompactInPlace, EqualsGatherByIndexBfloat16) { compact_random_cases<kvtrim::bfloat16>(3); }

TEST(CompactInPlace, LargeEnoughToRunThreaded) {
  // 8 heads x 3000 tokens x 64: above the threading threshold, heads of different lengths.
  std::mt19937 rng(11);
  for (layout l : {layout::head_major, layout::token_major}) {
    layer_buffers<float> b(l, 8, 3000, 64, 3000, 8, 5);
    const selection sel = random_selection(8, 3000, 8, rng);
    expect_compacted(b, sel, kvtrim::compact_in_place{}.apply(sel, b.layer()));
  }
}

TEST(CompactInPlace, HandWorkedOrderAndWindow) {
  // One head, 6 tokens, dim 1, values 10..15: keep {1, 3, 4, 5} -> rows 11, 13, 14, 15, then the
  // old rows 4 and 5 stay as they were.
  std::vector<float> k{10, 11, 12, 13, 14, 15}, v{20, 21, 22, 23, 24, 25}, q{0, 0};
  kvtrim::layer_kv<float> kv;
  kv.keys = kvtrim::view3<float>::head_major(k.data(), 1, 6, 1);
  kv.values = kvtrim::view3<float>::head_major(v.data(), 1, 6, 1);
  kv.queries = kvtrim::view3<const float>::head_major(q.data(), 1, 2, 1);
  selection sel{{{1, 3, 4, 5}}};
  EXPECT_EQ(kvtrim::compact_in_place{}.apply(sel, kv), (std::vector<index_t>{4}));
  EXPECT_EQ(k, (std::vector<float>{11, 13, 14, 15, 14, 15}));
  EXPECT_EQ(v, (std::vector<float>{21, 23, 24, 25, 24, 25}));
}

TEST(CompactInPlace, WithoutQueriesNoWindowIsRequired) {
  layer_buffers<float> b(layout::head_major, 2, 10, 4, 10, 1, 9);
  kvtrim::layer_kv<float> kv = b.layer();
  kv.queries = {};
  const selection sel{{{0, 4}, {}}};
  expect_compacted(b, sel, kvtrim::compact_in_place{}.apply(sel, kv));
}

TEST(CompactInPlace, BadSelectionsAreRejectedWithTheViewsUntouched) {
  // Head 0 is valid (and would move rows); head 1 carries the defect, so a lazy check would
  // already have written head 0.
  const index_t n = 12;  // window 3 -> 9, 10, 11
  const std::vector<index_t> good{2, 5, 9, 10, 11};
  const std::vector<std::vector<index_t>> bad_heads{
      {5, 2, 9, 10, 11},      // not ascending
      {2, 2, 9, 10, 11},      // duplicate
      {2, 5, 9, 10, 11, 12},  // index == n (padding token)
      {-1, 5, 9, 10, 11},     // negative
      {2, 5, 9, 11},          // window token 10 missing
      {2, 5, 10, 11},         // window token 9 missing
      {},                     // nothing at all, not even the window
  };
  for (layout l : {layout::head_major, layout::token_major}) {
    for (const auto& bad : bad_heads) {
      layer_buffers<float> b(l, 2, 16, 8, n, 3, 21);
      const selection sel{{good, bad}};
      EXPECT_THROW(kvtrim::compact_in_place{}.apply(sel, b.layer()), kvtrim::error);
      EXPECT_TRUE(b.untouched()) << name(l);
      kvtrim::compact_in_place{}.apply(selection{{good, good}}, b.layer());  // the good one works
      EXPECT_FALSE(b.untouched());
    }
    layer_buffers<float> b(l, 2, 16, 8, n, 3, 22);
    EXPECT_THROW(kvtrim::compact_in_place{}.apply(selection{{good}}, b.layer()), kvtrim::error);
    EXPECT_THROW(kvtrim::compact_in_place{}.apply(selection{{good, good, good}}, b.layer()), kvtrim::error);
    kvtrim::layer_kv<float> kv = b.layer();
    kv.values = kv.keys;  // aliasing K and V
    EXPECT_THROW(kvtrim::compact_in_place{}.apply(selection{{good, good}}, kv), kvtrim::error);
    kv = b.layer();
    kv.values = kv.values.first_tokens(15);  // shapes differ
    EXPECT_THROW(kvtrim::compact_in_place{}.apply(selection{{good, good}}, kv), kvtrim::error);
    kv = b.layer();
    kv.length = 17;  // longer than the views
    EXPECT_THROW(kvtrim::compact_in_place{}.apply(selection{{good, good}}, kv), kvtrim::error);
    kv = b.layer();
    kv.keys = kvtrim::view3<float>(b.k.data(), 2, 16, 8, 8, 4, 1);  // overlapping rows
    EXPECT_THROW(kvtrim::compact_in_place{}.apply(selection{{good, good}}, kv), kvtrim::error);
    EXPECT_TRUE(b.untouched());
  }
}

TEST(CompactInPlace, EndToEndWithSelectTop) {
  // Scores planted so head 0 wants tokens 3 and 7, head 1 tokens 0 and 1 (n = 12, w = 2).
  layer_buffers<float> b(layout::token_major, 2, 12, 4, 12, 2, 31);
  token_scores s = token_scores::make(false, 2, 0, 12, 2);
  s.row(0)[3] = 5;
  s.row(0)[7] = 4;
  s.row(1)[0] = 2;
  s.row(1)[1] = 3;
  const selection sel = kvtrim::select_top(s, {4, 4});
  EXPECT_EQ(sel.keep[0], (std::vector<index_t>{3, 7, 10, 11}));
  EXPECT_EQ(sel.keep[1], (std::vector<index_t>{0, 1, 10, 11}));
  expect_compacted(b, sel, kvtrim::compact_in_place{}.apply(sel, b.layer()));
}

// copy_to ---------------------------------------------------------------------------------------

template <class T>
void copy_equals_compact(unsigned seed) {
  std::mt19937 rng(seed);
  for (layout l : {layout::head_major, layout::token_major, layout::padded, layout::dim_strided})
    for (int trial = 0; trial < 8; ++trial) {
      const index_t H = 1 + static_cast<index_t>(rng() % 4), D = 1 + static_cast<index_t>(rng() % 33);
      const index_t N = 8 + static_cast<index_t>(rng() % 150), n = N - static_cast<index_t>(rng() % 4);
      const index_t w = 1 + static_cast<index_t>(rng() % 8);
      layer_buffers<T> src(l, H, N, D, n, w, rng());
      const selection sel = random_selection(H, n, w, rng);
      // Destination: padded head-major, capacity = the largest kept count + 2, sentinel-filled.
      index_t cap = 0;
      for (const auto& k : sel.keep) cap = std::max(cap, static_cast<index_t>(k.size()));
      cap += 2;
      const index_t st = D + 1, sh = cap * st;
      const T sentinel = kvtrim::from_float<T>(-123.0f);
      std::vector<T> dk(static_cast<size_t>(H * sh), sentinel), dv(dk);
      kvtrim::copy_to<T> exec(kvtrim::view3<T>(dk.data(), H, cap, D, sh, st, 1),
                              kvtrim::view3<T>(dv.data(), H, cap, D, sh, st, 1));
      const auto lens = exec.apply(sel, src.layer());
      ASSERT_TRUE(src.untouched()) << "copy_to wrote its source";
      // Same rows as in-place compaction of the same layer.
      const auto lens2 = kvtrim::compact_in_place{}.apply(sel, src.layer());
      ASSERT_EQ(lens, lens2);
      for (index_t h = 0; h < H; ++h)
        for (index_t t = 0; t < cap; ++t)
          for (index_t d = 0; d < D; ++d) {
            const size_t e = static_cast<size_t>(h * sh + t * st + d);
            if (t < lens[static_cast<size_t>(h)]) {
              ASSERT_TRUE(same_bits(dk[e], src.k[static_cast<size_t>(src.at(h, t, d))]));
              ASSERT_TRUE(same_bits(dv[e], src.v[static_cast<size_t>(src.at(h, t, d))]));
            } else {
              ASSERT_TRUE(same_bits(dk[e], sentinel)) << "written past the new length";
              ASSERT_TRUE(same_bits(dv[e], sentinel)) << "written past the new length";
            }
          }
      for (index_t h = 0; h < H; ++h)  // the padding column of each row too
        for (index_t t = 0; t < cap; ++t) {
          ASSERT_TRUE(same_bits(dk[static_cast<size_t>(h * sh + t * st + D)], sentinel));
        }
    }
}

TEST(CopyTo, EqualsCompactInPlaceFloat) { copy_equals_compact<float>(41); }
TEST(CopyTo, EqualsCompactInPlaceHalf) { copy_equals_compact<kvtrim::half>(42); }
TEST(CopyTo, EqualsCompactInPlaceBfloat16) { copy_equals_compact<kvtrim::bfloat16>(43); }

TEST(CopyTo, ConvertsFloatToHalf) {
  std::vector<float> k{1.0f, 2.5f, -3.0f, 0.1f}, v{4, 5, 6, 7}, q{0};
  kvtrim::layer_kv<float> kv;
  kv.keys = kvtrim::view3<float>::head_major(k.data(), 1, 4, 1);
  kv.values = kvtrim::view3<float>::head_major(v.data(), 1, 4, 1);
  kv.queries = kvtrim::view3<const float>::head_major(q.data(), 1, 1, 1);
  std::vector<kvtrim::half> dk(3), dv(3);
  kvtrim::copy_to<kvtrim::half> exec(kvtrim::view3<kvtrim::half>::head_major(dk.data(), 1, 3, 1),
                                     kvtrim::view3<kvtrim::half>::head_major(dv.data(), 1, 3, 1));
  EXPECT_EQ(exec.apply(selection{{{1, 2, 3}}}, kv), (std::vector<index_t>{3}));
  EXPECT_EQ(kvtrim::to_float(dk[0]), 2.5f);
  EXPECT_EQ(kvtrim::to_float(dk[1]), -3.0f);
  EXPECT_EQ(dk[2].bits, kvtrim::from_float<kvtrim::half>(0.1f).bits);
  EXPECT_EQ(kvtrim::to_float(dv[2]), 7.0f);
}

TEST(CopyTo, BadInputIsRejectedWithTheDestinationUntouched) {
  layer_buffers<float> src(layout::head_major, 2, 16, 8, 16, 2, 51);
  const std::vector<index_t> four{1, 3, 14, 15}, six{1, 2, 3, 4, 14, 15};
  std::vector<float> dk(2 * 5 * 8, -1.0f), dv(dk);
  const std::vector<float> dk0 = dk;
  kvtrim::copy_to<float> exec(kvtrim::view3<float>::head_major(dk.data(), 2, 5, 8),
                              kvtrim::view3<float>::head_major(dv.data(), 2, 5, 8));
  EXPECT_EQ(exec.capacity(), 5);
  EXPECT_THROW(exec.apply(selection{{four, six}}, src.layer()), kvtrim::error);  // 6 > capacity 5
  EXPECT_THROW(exec.apply(selection{{four, {1, 3, 14}}}, src.layer()), kvtrim::error);  // window
  EXPECT_THROW(exec.apply(selection{{four}}, src.layer()), kvtrim::error);
  EXPECT_EQ(dk, dk0);
  EXPECT_EQ(dv, dk0);
  EXPECT_TRUE(src.untouched());
  // Destination heads / dim differ from the source.
  kvtrim::copy_to<float> three_heads(kvtrim::view3<float>::head_major(dk.data(), 3, 2, 8),
                                     kvtrim::view3<float>::head_major(dv.data(), 3, 2, 8));
  EXPECT_THROW(three_heads.apply(selection{{{15}, {15}}}, src.layer()), kvtrim::error);
  kvtrim::copy_to<float> dim4(kvtrim::view3<float>::head_major(dk.data(), 2, 5, 4),
                              kvtrim::view3<float>::head_major(dv.data(), 2, 5, 4));
  EXPECT_THROW(dim4.apply(selection{{four, four}}, src.layer()), kvtrim::error);
  // Destination inside the source memory.
  kvtrim::copy_to<float> inside(kvtrim::view3<float>::head_major(src.v.data() + 8, 2, 5, 8),
                                kvtrim::view3<float>::head_major(dv.data(), 2, 5, 8));
  EXPECT_THROW(inside.apply(selection{{four, four}}, src.layer()), kvtrim::error);
  EXPECT_TRUE(src.untouched());
  EXPECT_EQ(dk, dk0);
  // Bad destination views are refused at construction.
  EXPECT_THROW(kvtrim::copy_to<float>(kvtrim::view3<float>::head_major(dk.data(), 2, 5, 8),
                                      kvtrim::view3<float>::head_major(dk.data(), 2, 5, 8)),
               kvtrim::error);
  EXPECT_THROW(kvtrim::copy_to<float>(kvtrim::view3<float>::head_major(dk.data(), 2, 5, 8),
                                      kvtrim::view3<float>::head_major(dv.data(), 2, 4, 8)),
               kvtrim::error);
  EXPECT_THROW(kvtrim::copy_to<float>(kvtrim::view3<float>::head_major(nullptr, 2, 5, 8),
                                      kvtrim::view3<float>::head_major(dv.data(), 2, 5, 8)),
               kvtrim::error);
  // And the valid call works.
  EXPECT_EQ(exec.apply(selection{{four, four}}, src.layer()), (std::vector<index_t>{4, 4}));
  EXPECT_EQ(dk[0], src.k[static_cast<size_t>(src.at(0, 1, 0))]);
}

}  // namespace
