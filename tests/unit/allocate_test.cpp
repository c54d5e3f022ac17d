// Budget allocators: exact hand-worked allocations, exact totals, clamps, bad input.
#include <cfenv>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

#include <gtest/gtest.h>

#include "kvtrim/allocate/apportion.hpp"
#include "kvtrim/allocate/cake_layers.hpp"
#include "kvtrim/allocate/error_aware.hpp"
#include "kvtrim/allocate/head_adaptive.hpp"
#include "kvtrim/allocate/head_pool.hpp"
#include "kvtrim/allocate/budget_frame.hpp"
#include "kvtrim/allocate/pyramid.hpp"
#include "kvtrim/allocate/uniform.hpp"

namespace kvtrim {
namespace {

using idx = std::vector<index_t>;

model_shape shape_of(int layers, int q_heads, int kv_heads, index_t context = 0) {
  model_shape s;
  s.layers = layers;
  s.q_heads = q_heads;
  s.kv_heads = kv_heads;
  s.head_dim = 64;
  s.context = context;
  return s;
}

token_scores scores_for(index_t kv_heads, index_t n, index_t w, index_t offset = 0,
                        bool shared = false) {
  return token_scores::make(shared, kv_heads, offset, n, w);
}

// Sum over layers and local heads of what head_budgets hands out, layers in order.
template <class A>
index_t total_kept(const A& a, typename A::state& st, int layers, const token_scores& s) {
  index_t t = 0;
  for (int l = 0; l < layers; ++l) {
    const idx b = a.head_budgets(st, l, s);
    t += std::accumulate(b.begin(), b.end(), index_t{0});
  }
  return t;
}

// A small deterministic generator for sweeps (no <random> distribution differences).
struct lcg {
  std::uint64_t x;
  std::uint32_t next() {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<std::uint32_t>(x >> 33);
  }
  double unit() { return next() / 2147483648.0; }  // [0, 1)
};

// ------------------------------------------------------------------ shared rounding helpers

TEST(AllocateRounding, RoundHalfEvenMatchesNearbyintToNearest) {
  const int saved = std::fegetround();
  ASSERT_EQ(std::fesetround(FE_TONEAREST), 0);
  const double xs[] = {0.5, 1.5, 2.5, 3.5, -0.5, -1.5, -2.5, 0.49999999999999994, 2.5000000000000004,
                       34.5, 103.5, 7.2, 0.8, 1e15 + 0.5, -7.5, 0.0, 4.0};
  for (double x : xs) EXPECT_EQ(detail::round_half_even(x), std::nearbyint(x)) << x;
  std::fesetround(saved);
  EXPECT_EQ(detail::round_half_even(2.5), 2.0);
  EXPECT_EQ(detail::round_half_even(3.5), 4.0);
  EXPECT_EQ(detail::round_half_even(-2.5), -2.0);
}

TEST(AllocateRounding, RoundHalfEvenIgnoresTheCallersRoundingMode) {
  const int saved = std::fegetround();
  ASSERT_EQ(std::fesetround(FE_UPWARD), 0);
  const double r1 = detail::round_half_even(2.5), r2 = detail::round_half_even(7.2);
  std::fesetround(saved);
  EXPECT_EQ(r1, 2.0);
  EXPECT_EQ(r2, 7.0);
}

TEST(AllocateRounding, FloorQuotientIsPythonFloorDivision) {
  EXPECT_EQ(detail::floor_quotient(101.0, 1.01), 99.0);  // std::floor(101 / 1.01) is 100
  EXPECT_EQ(std::floor(101.0 / 1.01), 100.0);             // (why the helper exists)
  EXPECT_EQ(detail::floor_quotient(22.0, 1.01), 21.0);
  EXPECT_EQ(detail::floor_quotient(6.0, 3.0), 2.0);
  EXPECT_EQ(detail::floor_quotient(7.0, 2.0), 3.0);
  EXPECT_EQ(detail::floor_quotient(0.0, 1.2), 0.0);
  EXPECT_EQ(detail::floor_quotient(504.0, 1.2), 420.0);
}

TEST(AllocateRounding, ApportionRoundsHalfToEvenWhenThatIsAlreadyExact) {
  // Largest remainder alone would give {3, 3}; half-to-even gives {2, 4}, already exact.
  EXPECT_EQ(detail::apportion({2.5, 3.5}, 6, {10, 10}), (idx{2, 4}));
}

TEST(AllocateRounding, ApportionGivesTheRemainderToTheLowerIndexOnTies) {
  const double third = 1.0 / 3.0;
  EXPECT_EQ(detail::apportion({third, third, third}, 1, {5, 5, 5}), (idx{1, 0, 0}));
  EXPECT_EQ(detail::apportion({2 * third, 2 * third, 2 * third}, 2, {5, 5, 5}), (idx{1, 1, 0}));
  // Both directions agree with textbook largest remainder (floor, then the largest fractions,
  // lower index first): 2/3 x 3 rounds to 3, the highest index gives one back.
  EXPECT_EQ(detail::apportion({1.4, 0.6, 0.0}, 2, {5, 5, 5}), (idx{1, 1, 0}));
  EXPECT_EQ(detail::apportion({1.0, 0.6, 0.4}, 2, {5, 5, 5}), (idx{1, 1, 0}));
}

TEST(AllocateRounding, ApportionCapsAndResplitsInProportion) {
  EXPECT_EQ(detail::apportion({5.0, 1.0, 1.0}, 7, {3, 10, 10}), (idx{3, 2, 2}));
  EXPECT_EQ(detail::apportion({6.0, 3.0, 1.0}, 10, {2, 10, 10}), (idx{2, 6, 2}));
  // The caps can't hold the total: everything at its cap.
  EXPECT_EQ(detail::apportion({5.0, 5.0}, 10, {3, 4}), (idx{3, 4}));
  // All quotas zero: an even spread, lower index first.
  EXPECT_EQ(detail::apportion({0.0, 0.0, 0.0}, 4, {9, 9, 9}), (idx{2, 1, 1}));
}

TEST(AllocateRounding, ApportionRejectsBadInput) {
  EXPECT_THROW(detail::apportion({1.0, -0.5}, 1, {5, 5}), error);
  EXPECT_THROW(detail::apportion({1.0, std::nan("")}, 1, {5, 5}), error);
  EXPECT_THROW(detail::apportion({1.0}, 1, {5, 5}), error);
  EXPECT_THROW(detail::apportion({1.0}, -1, {5}), error);
  EXPECT_THROW(detail::apportion({1.0}, 1, {-1}), error);
}

TEST(AllocateRounding, SettleByPassesMovesOnePerItemPerPass) {
  idx v{0, 0, 0};
  const std::vector<double> prio{3, 2, 1};
  detail::settle_by_passes(v, 5, idx{0, 0, 0}, idx{1, 5, 5}, [&](size_t i) { return prio[i]; });
  EXPECT_EQ(v, (idx{1, 2, 2}));  // pass 1: +1 each in order 0,1,2; pass 2: item 0 is full
  detail::settle_by_passes(v, 3, idx{0, 0, 0}, idx{1, 5, 5}, [&](size_t i) { return prio[i]; });
  EXPECT_EQ(v, (idx{1, 1, 1}));  // removing: increasing priority, item 2 first, then item 1
}

// ------------------------------------------------------------------ uniform

TEST(AllocateUniform, EveryHeadKeepsB) {
  const uniform a;
  auto st = a.begin(shape_of(4, 8, 2), 20, 100, 8);
  const token_scores s = scores_for(2, 100, 8);
  for (int l = 0; l < 4; ++l) {
    EXPECT_EQ(a.head_budgets(st, l, s), (idx{20, 20}));
    EXPECT_EQ(a.layer_budget(st, l), 20);
  }
  EXPECT_EQ(total_kept(a, st, 4, s), 4 * 2 * 20);
}

TEST(AllocateUniform, ClipsToThePromptAndTheWindow) {
  const uniform a;
  auto all = a.begin(shape_of(2, 2, 2), 150, 100, 8);
  EXPECT_EQ(a.head_budgets(all, 0, scores_for(2, 100, 8)), (idx{100, 100}));
  auto win = a.begin(shape_of(2, 2, 2), 5, 100, 8);
  EXPECT_EQ(a.head_budgets(win, 1, scores_for(2, 100, 8)), (idx{8, 8}));
  // A window longer than the prompt is the whole prompt.
  auto tiny = a.begin(shape_of(2, 2, 2), 3, 4, 8);
  EXPECT_EQ(tiny.window, 4);
  EXPECT_EQ(a.head_budgets(tiny, 0, scores_for(2, 4, 4)), (idx{4, 4}));
}

TEST(AllocateUniform, RejectsBadInput) {
  const uniform a;
  EXPECT_THROW(a.begin(shape_of(4, 8, 2), 0, 100, 8), error);
  EXPECT_THROW(a.begin(shape_of(4, 8, 2), 20, 0, 8), error);
  EXPECT_THROW(a.begin(shape_of(4, 8, 2), 20, 100, -1), error);
  EXPECT_THROW(a.begin(shape_of(4, 8, 2, 64), 20, 100, 8), error);  // prompt > context
  EXPECT_THROW(a.begin(shape_of(4, 6, 4), 20, 100, 8), error);      // q_heads not a multiple
  auto st = a.begin(shape_of(4, 8, 2), 20, 100, 8);
  EXPECT_THROW(a.head_budgets(st, -1, scores_for(2, 100, 8)), error);
  EXPECT_THROW(a.head_budgets(st, 4, scores_for(2, 100, 8)), error);
  EXPECT_THROW(a.layer_budget(st, 4), error);
  EXPECT_THROW(a.head_budgets(st, 0, scores_for(2, 99, 8)), error);      // other prompt
  EXPECT_THROW(a.head_budgets(st, 0, scores_for(2, 100, 4)), error);     // other window
  EXPECT_THROW(a.head_budgets(st, 0, scores_for(2, 100, 8, 1)), error);  // heads [1, 3) of 2
  token_scores bad = scores_for(2, 100, 8);
  bad.values.pop_back();
  EXPECT_THROW(a.head_budgets(st, 0, bad), error);
}

// ------------------------------------------------------------------ pyramid

TEST(AllocatePyramid, HandWorkedFourLayersWithTheRoundingExcessRemovedAtTheTop) {
  // b = 112: min = 112 // 20 = 5, max = 224 - 5 = 219, steps = 214 // 3 = 71 (r = 1):
  // reference [219, 148, 77, 6] + 8 sums to 450 + 32, two more than 4 * 120; the excess
  // E = 4 * 1 / 2 = 2 comes off the last two layers.
  const pyramid a;
  auto st = a.begin(shape_of(4, 8, 2), 120, 1000, 8);
  EXPECT_EQ(st.layer_tokens, (idx{227, 156, 84, 13}));
  for (int l = 0; l < 4; ++l) EXPECT_EQ(a.layer_budget(st, l), st.layer_tokens[size_t(l)]);
  EXPECT_EQ(total_kept(a, st, 4, scores_for(2, 1000, 8)), 4 * 2 * 120);
  EXPECT_EQ(a.head_budgets(st, 2, scores_for(2, 1000, 8)), (idx{84, 84}));
}

TEST(AllocatePyramid, TopLayerClippedToThePrompt) {
  // n - w = 192 <= 219: max = 192, min = 224 - 192 = 32, steps = 53, r = 1, E = 2.
  const pyramid a;
  auto st = a.begin(shape_of(4, 8, 2), 120, 200, 8);
  EXPECT_EQ(st.layer_tokens, (idx{200, 147, 93, 40}));
}

TEST(AllocatePyramid, EdgeCases) {
  const pyramid a;
  EXPECT_EQ(a.begin(shape_of(1, 2, 2), 120, 1000, 8).layer_tokens, (idx{120}));  // L = 1
  EXPECT_EQ(pyramid(1).begin(shape_of(4, 2, 2), 120, 1000, 8).layer_tokens,
            (idx{120, 120, 120, 120}));                                            // beta = 1
  EXPECT_EQ(a.begin(shape_of(3, 2, 2), 120, 100, 8).layer_tokens, (idx{100, 100, 100}));  // B >= n
  EXPECT_EQ(a.begin(shape_of(3, 2, 2), 100, 100, 8).layer_tokens, (idx{100, 100, 100}));
  EXPECT_EQ(a.begin(shape_of(3, 2, 2), 5, 100, 8).layer_tokens, (idx{8, 8, 8}));  // B < w
  EXPECT_EQ(a.begin(shape_of(3, 2, 2), 8, 100, 8).layer_tokens, (idx{8, 8, 8}));  // B = w
  EXPECT_THROW(pyramid(0), error);
  EXPECT_THROW(pyramid(-3), error);
}

TEST(AllocatePyramid, SweepDecreasingWithinThePromptAndExact) {
  for (int L : {1, 2, 3, 5, 7, 32})
    for (index_t beta : {1, 2, 20, 100})
      for (index_t n : {9, 40, 257, 4096})
        for (index_t w : {1, 8})
          for (index_t B : {1, 8, 9, 20, 64, 100, 256, 300, 5000}) {
            const auto st = pyramid(beta).begin(shape_of(L, 4, 2), B, n, w);
            const index_t wn = std::min(w, n);
            index_t sum = 0;
            for (size_t l = 0; l < st.layer_tokens.size(); ++l) {
              const index_t t = st.layer_tokens[l];
              EXPECT_GE(t, wn);
              EXPECT_LE(t, n);
              if (l > 0) {
                EXPECT_LE(t, st.layer_tokens[l - 1]) << "not non-increasing";
              }
              sum += t;
            }
            if (B >= wn)
              EXPECT_EQ(sum, L * std::min(B, n)) << "L=" << L << " beta=" << beta << " n=" << n
                                                  << " w=" << w << " B=" << B;
            else
              EXPECT_EQ(sum, L * wn);
          }
}

// ------------------------------------------------------------------ error_aware (CompressKV)

struct ErrorAwareCase {
  std::vector<double> weights;
  index_t B, n;
  idx expected;
};

TEST(AllocateErrorAware, HandWorkedFourLayerCases) {
  // L = 4, w = 8, m = 32; pool = L*B - L*m.
  const ErrorAwareCase cases[] = {
      // e~ = .2 .2 .2 .4, pool 272: 54.4 -> 54 (x3), 108.8 -> 109; total 399: +1 to layer 3.
      {{1, 1, 1, 2}, 100, 10000, {86, 86, 86, 142}},
      {{10, 10, 10, 20}, 100, 10000, {86, 86, 86, 142}},  // only the ratios matter
      // e~ = .3 .3 .3 .1: 81.6 -> 82 (x3), 27.2 -> 27; total 401: -1 from layer 3 (smallest e~).
      {{3, 3, 3, 1}, 100, 10000, {114, 114, 114, 58}},
      // Half-to-even: pool 276: 34.5 -> 34, 103.5 -> 104, 0, 138; exactly 404 (half-up: 405).
      {{1, 3, 0, 4}, 101, 10000, {66, 136, 32, 170}},
      // Clipped at 3B = 300 (304): 4 tokens back in passes over layers 0..2 (e~ = 0, tied).
      {{0, 0, 0, 1}, 100, 10000, {34, 33, 33, 300}},
      // 1/3 * 272 = 90.67 -> 91 (x3): 401; the tie among layers 0..2 goes to layer 0.
      {{1, 1, 1, 0}, 100, 10000, {122, 123, 123, 32}},
      // Prompt of 150: every layer capped at min(3B, n) = 150, 154 tokens spread over the others.
      {{0, 0, 0, 1}, 100, 150, {84, 83, 83, 150}},
      // B < m: m is clipped to B, nothing to distribute.
      {{1, 2, 3, 4}, 20, 10000, {20, 20, 20, 20}},
      // B >= n: the whole prompt everywhere.
      {{1, 2, 3, 4}, 100, 50, {50, 50, 50, 50}},
      // B < w: the window only.
      {{1, 2, 3, 4}, 5, 10000, {8, 8, 8, 8}},
  };
  for (const auto& c : cases) {
    const error_aware a(c.weights);
    auto st = a.begin(shape_of(4, 8, 2), c.B, c.n, 8);
    EXPECT_EQ(st.layer_tokens, c.expected) << "B=" << c.B << " n=" << c.n;
    const token_scores s = scores_for(2, c.n, 8);
    for (int l = 0; l < 4; ++l) {
      EXPECT_EQ(a.layer_budget(st, l), c.expected[size_t(l)]);
      EXPECT_EQ(a.head_budgets(st, l, s), idx(2, c.expected[size_t(l)]));
    }
  }
}

TEST(AllocateErrorAware, WindowLargerThanMinTokensRaisesTheFloor) {
  const error_aware a({0, 0, 0, 1});
  EXPECT_EQ(a.begin(shape_of(4, 8, 2), 100, 10000, 40).layer_tokens, (idx{40, 40, 40, 280}));
  // m = 0: the window (8) is the floor: pool 400 - 32 = 368, 184 each -> [8, 8, 192, 192];
  // with m = 32: pool 272 -> [32, 32, 168, 168].
  EXPECT_EQ(error_aware({0, 0, 1, 1}, 0).begin(shape_of(4, 8, 2), 100, 10000, 8).layer_tokens,
            (idx{8, 8, 192, 192}));
  EXPECT_EQ(error_aware({0, 0, 1, 1}).begin(shape_of(4, 8, 2), 100, 10000, 8).layer_tokens,
            (idx{32, 32, 168, 168}));
}

TEST(AllocateErrorAware, SweepTotalsExactAndWithinBounds) {
  lcg g{7};
  for (int trial = 0; trial < 300; ++trial) {
    const int L = 1 + static_cast<int>(g.next() % 40);
    std::vector<double> wts(static_cast<size_t>(L));
    for (double& e : wts) e = (g.next() % 4 == 0) ? 0.0 : g.unit();
    wts[g.next() % wts.size()] += 0.01;
    const index_t n = 1 + g.next() % 3000, w = 1 + g.next() % 16;
    const index_t B = 1 + g.next() % 600, m = g.next() % 64;
    const error_aware a(wts, m);
    const auto st = a.begin(shape_of(L, 4, 2), B, n, w);
    const index_t wn = std::min(w, n), b = std::min(B, n);
    const index_t sum = std::accumulate(st.layer_tokens.begin(), st.layer_tokens.end(), index_t{0});
    for (index_t t : st.layer_tokens) {
      EXPECT_GE(t, std::min(std::max(m, wn), std::max(b, wn)));
      EXPECT_LE(t, std::max(std::min(3 * b, n), wn));
    }
    EXPECT_EQ(sum, B >= wn ? L * b : L * wn) << "trial " << trial;
  }
}

TEST(AllocateErrorAware, RejectsBadWeights) {
  EXPECT_THROW(error_aware({}), error);
  EXPECT_THROW(error_aware({1.0, -0.1, 1.0}), error);
  EXPECT_THROW(error_aware({1.0, std::nan(""), 1.0}), error);
  EXPECT_THROW(error_aware({1.0, std::numeric_limits<double>::infinity()}), error);
  EXPECT_THROW(error_aware({0.0, 0.0}), error);
  EXPECT_THROW(error_aware({1.0, 1.0}, -1), error);
  const error_aware three({1, 1, 1});
  EXPECT_THROW(three.begin(shape_of(4, 8, 2), 100, 1000, 8), error);  // 3 weights, 4 layers
  EXPECT_NO_THROW(three.begin(shape_of(3, 8, 2), 100, 1000, 8));
}

// ------------------------------------------------------------------ head_pool (HeadKV)

// L = 2, 4 query heads, 2 KV heads (G = 2). Raw scores sum to 8:
// KV scores: layer 0 [5/8, 1/8], layer 1 [1/8, 1/8].
const std::vector<std::vector<double>> kHeadScores{{4, 1, 1, 0}, {0, 1, 1, 0}};

TEST(AllocateHeadPool, HandWorkedFormulaMode) {
  // B = 30, w = 8: b = 22, floor(22 / 1.01) = 21, pool = 21 * 2 * 2 = 84, base = 1.
  // quotas 5/8 * 84 + 1 = 53.5 -> 54, 1/8 * 84 + 1 = 11.5 -> 12 (x3): 90 candidates, 2 over.
  const head_pool a(kHeadScores);
  auto st = a.begin(shape_of(2, 4, 2), 30, 1000, 8);
  EXPECT_EQ(st.head_tokens, (std::vector<idx>{{62, 20}, {20, 20}}));
  const token_scores s = scores_for(2, 1000, 8);
  EXPECT_EQ(a.head_budgets(st, 0, s), (idx{62, 20}));
  EXPECT_EQ(total_kept(a, st, 2, s), 122);  // the formula's total: 2 more than 2 * 2 * 30
  EXPECT_EQ(a.layer_budget(st, 0), 41);
  EXPECT_EQ(a.layer_budget(st, 1), 20);
}

TEST(AllocateHeadPool, HandWorkedExactMode) {
  // Same quotas [53.5, 11.5, 11.5, 11.5], 88 candidates: largest remainder floors to 86 and
  // gives the 2 left to the lowest (layer, head) among the equal fractions: [54, 12, 11, 11].
  const head_pool a(kHeadScores, 1.01, head_pool::total::exact);
  auto st = a.begin(shape_of(2, 4, 2), 30, 1000, 8);
  EXPECT_EQ(st.head_tokens, (std::vector<idx>{{62, 20}, {19, 19}}));
  EXPECT_EQ(total_kept(a, st, 2, scores_for(2, 1000, 8)), 2 * 2 * 30);
}

TEST(AllocateHeadPool, PromptCapBothModes) {
  // n = 50: a head holds at most 42 candidates. Formula: min(54, 42) = 42, total falls short.
  const head_pool f(kHeadScores);
  EXPECT_EQ(f.begin(shape_of(2, 4, 2), 30, 50, 8).head_tokens,
            (std::vector<idx>{{50, 20}, {20, 20}}));
  // Exact: 88 - 42 = 46 re-split over 11.5 : 11.5 : 11.5 -> 15.33 each -> 16, 15, 15.
  const head_pool e(kHeadScores, 1.01, head_pool::total::exact);
  EXPECT_EQ(e.begin(shape_of(2, 4, 2), 30, 50, 8).head_tokens,
            (std::vector<idx>{{50, 24}, {23, 23}}));
}

TEST(AllocateHeadPool, ZeroScoresBetaOneAndUniformFallback) {
  const std::vector<std::vector<double>> one_head{{4, 4, 0, 0}, {0, 0, 0, 0}};
  // KV scores [1, 0], [0, 0]: quotas 85, 1, 1, 1 — a zero-score head keeps base + w = 9.
  EXPECT_EQ(head_pool(one_head).begin(shape_of(2, 4, 2), 30, 1000, 8).head_tokens,
            (std::vector<idx>{{93, 9}, {9, 9}}));
  // beta = 1 pools everything (base 0): a zero-score head keeps only its window.
  EXPECT_EQ(head_pool(one_head, 1.0).begin(shape_of(2, 4, 2), 30, 1000, 8).head_tokens,
            (std::vector<idx>{{96, 8}, {8, 8}}));
  // All scores zero: uniform.
  const std::vector<std::vector<double>> zeros{{0, 0, 0, 0}, {0, 0, 0, 0}};
  for (auto mode : {head_pool::total::formula, head_pool::total::exact})
    EXPECT_EQ(head_pool(zeros, 1.01, mode).begin(shape_of(2, 4, 2), 30, 1000, 8).head_tokens,
              (std::vector<idx>{{30, 30}, {30, 30}}));
}

TEST(AllocateHeadPool, BetaUsesPythonFloorDivision) {
  // b = 101: 101 // 1.01 = 99 (not 100): pool = 396, base = 2.
  // 5/8 * 396 + 2 = 249.5 -> 250 (+8 = 258); 1/8 * 396 + 2 = 51.5 -> 52 (+8 = 60).
  EXPECT_EQ(head_pool(kHeadScores).begin(shape_of(2, 4, 2), 109, 10000, 8).head_tokens,
            (std::vector<idx>{{258, 60}, {60, 60}}));
}

TEST(AllocateHeadPool, ShardReadsItsOwnHeadsAndClamps) {
  const head_pool a(kHeadScores);
  auto st = a.begin(shape_of(2, 4, 2), 30, 1000, 8);
  EXPECT_EQ(a.head_budgets(st, 0, scores_for(1, 1000, 8, 0)), (idx{62}));
  EXPECT_EQ(a.head_budgets(st, 0, scores_for(1, 1000, 8, 1)), (idx{20}));
  EXPECT_EQ(a.begin(shape_of(2, 4, 2), 30, 30, 8).head_tokens,
            (std::vector<idx>{{30, 30}, {30, 30}}));  // B >= n: everything
  EXPECT_EQ(a.begin(shape_of(2, 4, 2), 5, 1000, 8).head_tokens,
            (std::vector<idx>{{8, 8}, {8, 8}}));  // B < w: the window
}

TEST(AllocateHeadPool, ExactModeSweep) {
  lcg g{11};
  for (int trial = 0; trial < 200; ++trial) {
    const int L = 1 + static_cast<int>(g.next() % 6), K = 1 + static_cast<int>(g.next() % 4);
    const int G = 1 + static_cast<int>(g.next() % 3);
    std::vector<std::vector<double>> sc(static_cast<size_t>(L),
                                        std::vector<double>(static_cast<size_t>(K * G)));
    for (auto& row : sc)
      for (double& v : row) v = (g.next() % 3 == 0) ? 0.0 : g.unit();
    const index_t n = 1 + g.next() % 2000, w = 1 + g.next() % 16, B = 1 + g.next() % 400;
    const double beta = 1.0 + g.unit() * 3;
    const head_pool a(sc, beta, head_pool::total::exact);
    auto st = a.begin(shape_of(L, K * G, K), B, n, w);
    const index_t wn = std::min(w, n);
    const index_t t = total_kept(a, st, L, scores_for(K, n, wn));
    EXPECT_EQ(t, B >= wn ? index_t(L) * K * std::min(B, n) : index_t(L) * K * wn)
        << "trial " << trial;
  }
}

TEST(AllocateHeadPool, RejectsBadInput) {
  EXPECT_THROW(head_pool(kHeadScores, 0.99), error);  // base would be negative
  EXPECT_THROW(head_pool(kHeadScores, std::nan("")), error);
  EXPECT_THROW(head_pool(kHeadScores, std::numeric_limits<double>::infinity()), error);
  EXPECT_THROW(head_pool({{1, -1, 0, 0}, {0, 0, 0, 0}}), error);
  EXPECT_THROW(head_pool({{1, 1, 0, 0}, {0, 0, 0}}), error);  // ragged
  EXPECT_THROW(head_pool({}), error);
  EXPECT_THROW(head_pool({{1, std::nan(""), 0, 0}, {0, 0, 0, 0}}), error);
  const head_pool a(kHeadScores);
  EXPECT_THROW(a.begin(shape_of(3, 4, 2), 30, 1000, 8), error);  // 2 layers of scores, 3 layers
  EXPECT_THROW(a.begin(shape_of(2, 8, 2), 30, 1000, 8), error);  // 4 query heads, 8 in the model
}

// ------------------------------------------------------------------ head_adaptive (Ada-KV)

token_scores rows_of(const std::vector<std::vector<float>>& rows, index_t n, index_t w) {
  token_scores s = scores_for(static_cast<index_t>(rows.size()), n, w);
  for (size_t h = 0; h < rows.size(); ++h)
    std::copy(rows[h].begin(), rows[h].end(), s.row(static_cast<index_t>(h)));
  return s;
}

TEST(AllocateHeadAdaptive, AHeadThatWinsEveryPairLeavesTheFloorToTheOthers) {
  // 2 KV heads, n = 38, w = 8: 30 candidates each; B = 18, S = 2 * 10 = 20 slots.
  // Head 0 wins all 20: caps 0.8 * 20 + 0.2 * 10 = 18 and 0 + 2 = 2.
  const head_adaptive<> a;
  auto st = a.begin(shape_of(1, 4, 2), 18, 38, 8);
  const token_scores s =
      rows_of({std::vector<float>(30, 1.0f), std::vector<float>(30, 0.0f)}, 38, 8);
  EXPECT_EQ(a.head_budgets(st, 0, s), (idx{26, 10}));
  EXPECT_EQ(a.layer_budget(st, 0), 18);
  // Equal scores everywhere: the ties go to the lower head, the same split.
  auto st2 = a.begin(shape_of(1, 4, 2), 18, 38, 8);
  EXPECT_EQ(a.head_budgets(st2, 0, rows_of({std::vector<float>(30, 0.5f),
                                             std::vector<float>(30, 0.5f)}, 38, 8)),
            (idx{26, 10}));
}

TEST(AllocateHeadAdaptive, RoundingMadeExactByLargestRemainder) {
  // 4 KV heads, n = 10, w = 2 (8 candidates), B = 5: S = 12, alpha = 0.5.
  // Head 0: seven 1.0s, head 1: five 0.9s, heads 2, 3: zeros -> counts [7, 5, 0, 0].
  // Quotas 0.5 * count + 1.5 = [5, 4, 1.5, 1.5] -> [5, 4, 2, 2] = 13 -> one back: of the equal
  // remainders the higher head (3) gives it, as largest remainder would ([5, 4, 1, 1] + 1 to head 2).
  const head_adaptive<> a(0.5);
  auto st = a.begin(shape_of(1, 4, 4), 5, 10, 2);
  const token_scores s = rows_of({{1, 1, 1, 1, 1, 1, 1, 0},
                                  {0.9f, 0.9f, 0.9f, 0.9f, 0.9f, 0, 0, 0},
                                  {0, 0, 0, 0, 0, 0, 0, 0},
                                  {0, 0, 0, 0, 0, 0, 0, 0}},
                                 10, 2);
  EXPECT_EQ(a.head_budgets(st, 0, s), (idx{7, 6, 4, 3}));
}

TEST(AllocateHeadAdaptive, TiesAtTheThresholdGoToTheLowerHead) {
  // S = 2 * 3 = 6 slots (n = 12, w = 2, B = 5), alpha = 0: pure counts.
  // Above the threshold 0.5: head 0 one (0.9), head 1 two (0.8); 3 more slots among the 0.5s:
  // head 0 has two, head 1 three -> head 0 takes 2, head 1 takes 1: counts [3, 3].
  const head_adaptive<> a(0.0);
  auto st = a.begin(shape_of(1, 2, 2), 5, 12, 2);
  const token_scores s = rows_of({{0.9f, 0.5f, 0.5f, 0, 0, 0, 0, 0, 0, 0},
                                  {0.8f, 0.8f, 0.5f, 0.5f, 0.5f, 0, 0, 0, 0, 0}},
                                 12, 2);
  EXPECT_EQ(a.head_budgets(st, 0, s), (idx{5, 5}));
  // Make head 1's 0.5s 0.6s: head 1 wins 5, head 0 one 0.9 (threshold 0.6, no ties).
  const token_scores s2 = rows_of({{0.9f, 0.5f, 0.5f, 0, 0, 0, 0, 0, 0, 0},
                                   {0.8f, 0.8f, 0.6f, 0.6f, 0.6f, 0, 0, 0, 0, 0}},
                                  12, 2);
  EXPECT_EQ(a.head_budgets(st, 0, s2), (idx{3, 7}));
}

TEST(AllocateHeadAdaptive, ComposesWithLayerAllocators) {
  // Ada-KV + PyramidKV: each layer's heads share exactly 2 * pyramid's layer budget.
  const head_adaptive<pyramid> ap;
  auto st = ap.begin(shape_of(4, 8, 2), 120, 1000, 8);
  std::vector<float> hot(992, 0.0f), cold(992, 0.0f);
  for (size_t t = 0; t < hot.size(); ++t) hot[t] = 1.0f + static_cast<float>(t % 7);
  const token_scores s = rows_of({hot, cold}, 1000, 8);
  const idx layers{227, 156, 84, 13};
  index_t total = 0;
  for (int l = 0; l < 4; ++l) {
    const idx b = ap.head_budgets(st, l, s);
    EXPECT_EQ(b[0] + b[1], 2 * layers[size_t(l)]) << "layer " << l;
    EXPECT_GT(b[0], b[1]);
    EXPECT_EQ(ap.layer_budget(st, l), layers[size_t(l)]);
    total += b[0] + b[1];
  }
  EXPECT_EQ(total, 4 * 2 * 120);
  // Layer 0: S = 2 * 219 = 438, head 0 wins all: 0.8 * 438 + 0.2 * 219 = 394.2 -> 394, 43.8 -> 44.
  auto st0 = ap.begin(shape_of(4, 8, 2), 120, 1000, 8);
  EXPECT_EQ(ap.head_budgets(st0, 0, s), (idx{402, 52}));

  // Ada-KV + CompressKV's error-aware layer budgets.
  const head_adaptive<error_aware> ae(0.2, error_aware({1, 1, 1, 2}));
  auto se = ae.begin(shape_of(4, 8, 2), 100, 1000, 8);
  const idx el{86, 86, 86, 142};
  for (int l = 0; l < 4; ++l) {
    const idx b = ae.head_budgets(se, l, s);
    EXPECT_EQ(b[0] + b[1], 2 * el[size_t(l)]);
  }

  // Ada-KV + CAKE: the inner cascade state travels in the state.
  const head_adaptive<cake_layers> ac;
  auto sc = ac.begin(shape_of(2, 2, 2), 12, 100, 2);
  token_scores cs = rows_of({std::vector<float>(98, 1.0f), std::vector<float>(98, 0.0f)}, 100, 2);
  cs.entropy_sum = 2, cs.variance_sum = 2, cs.stat_heads = 2;
  const idx c0 = ac.head_budgets(sc, 0, cs);  // layer 0 alone holds L * b = 20 candidates/head
  EXPECT_EQ(c0[0] + c0[1], 2 * 22);
  const idx c1 = ac.head_budgets(sc, 1, cs);
  EXPECT_EQ(c1[0] + c1[1], 2 * 12);
  EXPECT_EQ(ac.inner().current_layer_budgets(sc.inner), (idx{12, 12}));
}

TEST(AllocateHeadAdaptive, SharedScoresAndClamps) {
  const head_adaptive<pyramid> a;
  auto st = a.begin(shape_of(4, 8, 2), 120, 1000, 8);
  EXPECT_EQ(a.head_budgets(st, 1, scores_for(2, 1000, 8, 0, true)), (idx{156, 156}));
  const head_adaptive<> u;
  auto all = u.begin(shape_of(1, 2, 2), 50, 40, 8);
  EXPECT_EQ(u.head_budgets(all, 0, rows_of({std::vector<float>(32, 1.0f),
                                            std::vector<float>(32, 0.0f)}, 40, 8)),
            (idx{40, 40}));
  auto win = u.begin(shape_of(1, 2, 2), 5, 40, 8);
  EXPECT_EQ(u.head_budgets(win, 0, rows_of({std::vector<float>(32, 1.0f),
                                            std::vector<float>(32, 0.0f)}, 40, 8)),
            (idx{8, 8}));
}

TEST(AllocateHeadAdaptive, SweepLayerTotalsExact) {
  lcg g{3};
  for (int trial = 0; trial < 200; ++trial) {
    const index_t K = 1 + g.next() % 5, n = 1 + g.next() % 300, w = 1 + g.next() % 10;
    const index_t B = 1 + g.next() % 200;
    const double alpha = (g.next() % 5) * 0.25;
    const head_adaptive<> a(alpha);
    auto st = a.begin(shape_of(2, static_cast<int>(2 * K), static_cast<int>(K)), B, n, w);
    const index_t wn = std::min(w, n);
    token_scores s = scores_for(K, n, wn);
    for (float& v : s.values) v = static_cast<float>(g.next() % 7);  // many ties
    const idx b = a.head_budgets(st, 0, s);
    for (index_t t : b) {
      EXPECT_GE(t, wn);
      EXPECT_LE(t, n);
    }
    EXPECT_EQ(std::accumulate(b.begin(), b.end(), index_t{0}), K * std::max(std::min(B, n), wn))
        << "trial " << trial;
  }
}

TEST(AllocateHeadAdaptive, RejectsBadInput) {
  EXPECT_THROW(head_adaptive<>(-0.1), error);
  EXPECT_THROW(head_adaptive<>(1.5), error);
  EXPECT_THROW(head_adaptive<>(std::nan("")), error);
  const head_adaptive<> a;
  auto st = a.begin(shape_of(1, 2, 2), 18, 38, 8);
  token_scores s = rows_of({std::vector<float>(30, 1.0f), std::vector<float>(30, 0.0f)}, 38, 8);
  s.values[3] = std::nanf("");
  EXPECT_THROW(a.head_budgets(st, 0, s), error);
}

// ------------------------------------------------------------------ cake_layers (CAKE)

token_scores cake_scores_for(index_t kv_heads, index_t n, index_t w, double pref) {
  token_scores s = scores_for(kv_heads, n, w);
  s.stat_heads = 2;
  s.entropy_sum = 2 * pref;  // mean entropy = pref
  s.variance_sum = 2;        // mean variance = 1: P = pref with tau1 = tau2 = 1
  return s;
}

TEST(AllocateCake, HandWorkedCascade) {
  // L = 3, B = 12, w = 2: T = 3 * 10 = 30 candidates from the first layer on; P = 1, 2, 4.
  const cake_layers a;
  auto st = a.begin(shape_of(3, 2, 2), 12, 100, 2);
  EXPECT_EQ(a.head_budgets(st, 0, cake_scores_for(2, 100, 2, 1)), (idx{32, 32}));
  EXPECT_EQ(a.current_layer_budgets(st), (idx{32}));
  EXPECT_EQ(a.head_budgets(st, 1, cake_scores_for(2, 100, 2, 2)), (idx{22, 22}));
  EXPECT_EQ(a.current_layer_budgets(st), (idx{12, 22}));  // 10 : 20
  // 30/7 * [1, 2, 4] = [4.29, 8.57, 17.14] -> [4, 9, 17].
  EXPECT_EQ(a.head_budgets(st, 2, cake_scores_for(2, 100, 2, 4)), (idx{19, 19}));
  EXPECT_EQ(a.current_layer_budgets(st), (idx{6, 11, 19}));
  for (int l = 0; l < 3; ++l) EXPECT_EQ(a.layer_budget(st, l), (idx{6, 11, 19})[size_t(l)]);
}

TEST(AllocateCake, CascadeWithLayersCappedByThePrompt) {
  // n = 14, w = 2: a layer holds at most 12 candidates. T = 30.
  const cake_layers a;
  auto st = a.begin(shape_of(3, 2, 2), 12, 14, 2);
  a.head_budgets(st, 0, cake_scores_for(2, 14, 2, 1));
  EXPECT_EQ(a.current_layer_budgets(st), (idx{14}));  // min(30, 12): the whole prompt
  a.head_budgets(st, 1, cake_scores_for(2, 14, 2, 2));
  EXPECT_EQ(a.current_layer_budgets(st), (idx{14, 14}));  // min(30, 24) = 24, both capped
  a.head_budgets(st, 2, cake_scores_for(2, 14, 2, 4));
  // 30: layer 2 capped at 12, 18 re-split 1 : 2 -> 6, 12.
  EXPECT_EQ(a.current_layer_budgets(st), (idx{8, 14, 14}));
}

TEST(AllocateCake, RunningTotalNeverAboveLTimesBAndExactAtTheEnd) {
  lcg g{5};
  for (int trial = 0; trial < 100; ++trial) {
    const int L = 1 + static_cast<int>(g.next() % 12);
    const index_t n = 2 + g.next() % 500, w = 1 + g.next() % 8, B = 1 + g.next() % 200;
    const cake_layers a(0.5 + g.unit(), 0.5 + g.unit());
    auto st = a.begin(shape_of(L, 2, 1), B, n, w);
    const index_t wn = std::min(w, n);
    const index_t b = std::clamp(B - wn, index_t{0}, n - wn);
    idx before;
    for (int l = 0; l < L; ++l) {
      const double pref = (g.next() % 5 == 0) ? 0.0 : g.unit() * 10;
      a.head_budgets(st, l, cake_scores_for(1, n, wn, pref));
      const idx now = a.current_layer_budgets(st);
      ASSERT_EQ(now.size(), size_t(l) + 1);
      const index_t sum = std::accumulate(now.begin(), now.end(), index_t{0});
      EXPECT_EQ(sum, std::min(index_t(L) * b, (l + 1) * (n - wn)) + (l + 1) * wn);
      if (B >= wn) {
        EXPECT_LE(sum, index_t(L) * std::min(B, n));
      }
      for (size_t j = 0; j < before.size(); ++j) EXPECT_LE(now[j], before[j]) << "grew";
      before = now;
    }
    const index_t final_sum = std::accumulate(before.begin(), before.end(), index_t{0});
    EXPECT_EQ(final_sum, B >= wn ? index_t(L) * std::min(B, n) : index_t(L) * wn);
  }
}

TEST(AllocateCake, ZeroPreferencesShareEqually) {
  const cake_layers a;
  auto st = a.begin(shape_of(3, 2, 2), 12, 100, 2);
  for (int l = 0; l < 3; ++l) a.head_budgets(st, l, cake_scores_for(2, 100, 2, 0));
  EXPECT_EQ(a.current_layer_budgets(st), (idx{12, 12, 12}));
}

TEST(AllocateCake, TausShapeThePreference) {
  token_scores s = scores_for(1, 10, 2);
  s.stat_heads = 2, s.entropy_sum = 8, s.variance_sum = 18;  // H = 4, V = 9
  EXPECT_DOUBLE_EQ(cake_layers().preference(s), 36.0);
  EXPECT_DOUBLE_EQ(cake_layers(0.5, 2.0).preference(s), 16.0 * 3.0);
}

TEST(AllocateCake, ClampsAndBadInput) {
  const cake_layers a;
  auto all = a.begin(shape_of(2, 2, 2), 12, 10, 2);
  EXPECT_EQ(a.head_budgets(all, 0, cake_scores_for(2, 10, 2, 1)), (idx{10, 10}));
  EXPECT_EQ(a.head_budgets(all, 1, cake_scores_for(2, 10, 2, 3)), (idx{10, 10}));
  auto win = a.begin(shape_of(2, 2, 2), 1, 10, 2);
  EXPECT_EQ(a.head_budgets(win, 0, cake_scores_for(2, 10, 2, 1)), (idx{2, 2}));

  EXPECT_THROW(cake_layers(0.0, 1.0), error);
  EXPECT_THROW(cake_layers(1.0, -1.0), error);
  EXPECT_THROW(cake_layers(std::nan(""), 1.0), error);
  auto st = a.begin(shape_of(3, 2, 2), 12, 100, 2);
  EXPECT_THROW(a.layer_budget(st, 0), error);  // not seen yet
  EXPECT_THROW(a.head_budgets(st, 1, cake_scores_for(2, 100, 2, 1)), error);  // out of order
  token_scores no_stats = scores_for(2, 100, 2);
  EXPECT_THROW(a.head_budgets(st, 0, no_stats), error);
  token_scores neg = cake_scores_for(2, 100, 2, 1);
  neg.entropy_sum = -1;
  EXPECT_THROW(a.head_budgets(st, 0, neg), error);
  token_scores nan = cake_scores_for(2, 100, 2, 1);
  nan.variance_sum = std::nan("");
  EXPECT_THROW(a.head_budgets(st, 0, nan), error);
  EXPECT_TRUE(st.preference.empty());  // rejected calls left the state untouched
  a.head_budgets(st, 0, cake_scores_for(2, 100, 2, 1));
  EXPECT_THROW(a.head_budgets(st, 0, cake_scores_for(2, 100, 2, 1)), error);  // twice
}

// ------------------------------------------------------------------ every allocator, exact totals

TEST(AllocateTotals, EveryAllocatorKeepsExactlyLHBWhenNothingIsClipped) {
  const int L = 5, K = 2;
  const model_shape shape = shape_of(L, 4, K);
  const index_t n = 700, w = 8;
  lcg g{1};
  std::vector<std::vector<double>> hs(L, std::vector<double>(4));
  for (auto& r : hs)
    for (double& v : r) v = g.unit();
  token_scores s = scores_for(K, n, w);
  for (float& v : s.values) v = static_cast<float>(g.unit());
  s.stat_heads = 1, s.entropy_sum = 1.5, s.variance_sum = 0.25;
  for (index_t B : {8, 9, 33, 64, 100, 256, 699}) {
    const index_t want = index_t(L) * K * B;
    {
      const uniform a;
      auto st = a.begin(shape, B, n, w);
      EXPECT_EQ(total_kept(a, st, L, s), want);
    }
    {
      const pyramid a;
      auto st = a.begin(shape, B, n, w);
      EXPECT_EQ(total_kept(a, st, L, s), want);
    }
    {
      const error_aware a({0.1, 0.3, 0.05, 0.4, 0.15});
      auto st = a.begin(shape, B, n, w);
      EXPECT_EQ(total_kept(a, st, L, s), want);
    }
    {
      const head_pool a(hs, 1.01, head_pool::total::exact);
      auto st = a.begin(shape, B, n, w);
      EXPECT_EQ(total_kept(a, st, L, s), want);
    }
    {
      const head_adaptive<pyramid> a;
      auto st = a.begin(shape, B, n, w);
      EXPECT_EQ(total_kept(a, st, L, s), want);
    }
    {
      const head_adaptive<head_pool> a(0.2, head_pool(hs, 1.01, head_pool::total::exact));
      auto st = a.begin(shape, B, n, w);
      EXPECT_EQ(total_kept(a, st, L, s), want);
    }
    {
      // CAKE's budgets of earlier layers shrink as later ones arrive: the final ones count.
      const cake_layers a;
      auto st = a.begin(shape, B, n, w);
      for (int l = 0; l < L; ++l) a.head_budgets(st, l, s);
      const idx c = a.current_layer_budgets(st);
      EXPECT_EQ(std::accumulate(c.begin(), c.end(), index_t{0}) * K, want);
    }
  }
}

}  // namespace
}  // namespace kvtrim
