// The paired bootstrap behind every comparison in `kvtrim report`, on cases computed by hand.
#include <gtest/gtest.h>

#include <vector>

#include "paired_bootstrap.hpp"

namespace {

using kvtools::paired_bootstrap;

TEST(PairedBootstrap, ConstantDifferenceHasAPointInterval) {
  const auto r = paired_bootstrap({5, 7, 9}, {3, 5, 7});
  EXPECT_EQ(r.prompts, 3u);
  EXPECT_DOUBLE_EQ(r.mean, 2.0);
  EXPECT_DOUBLE_EQ(r.lo, 2.0);
  EXPECT_DOUBLE_EQ(r.hi, 2.0);
  EXPECT_EQ(r.verdict(), 1);
}

// d = {0, 2}: resample means are 0, 1, 2 with probabilities 1/4, 1/2, 1/4, so the 2.5 % and
// 97.5 % points are 0 and 2, and the interval includes 0: a tie.
TEST(PairedBootstrap, TwoPromptsEnumeratedByHand) {
  const auto r = paired_bootstrap({1, 3}, {1, 1}, 7, 20000);
  EXPECT_DOUBLE_EQ(r.mean, 1.0);
  EXPECT_DOUBLE_EQ(r.lo, 0.0);
  EXPECT_DOUBLE_EQ(r.hi, 2.0);
  EXPECT_EQ(r.verdict(), 0);
}

// Ten prompts, b wins one by 100 points: mean -10; a resample avoids that prompt with
// probability 0.9^10 = 0.35 (mean 0), so the interval reaches 0 and it is a tie, not a loss.
TEST(PairedBootstrap, OneLargeDifferenceIsNotAWin) {
  std::vector<double> a(10, 50), b(10, 50);
  b[3] = 150;
  const auto r = paired_bootstrap(a, b, 1);
  EXPECT_DOUBLE_EQ(r.mean, -10.0);
  EXPECT_DOUBLE_EQ(r.hi, 0.0);
  EXPECT_LT(r.lo, -10.0);
  EXPECT_EQ(r.verdict(), 0);
}

TEST(PairedBootstrap, SeededAndReproducible) {
  const std::vector<double> a = {1, 4, 2, 8, 5, 7}, b = {2, 3, 2, 5, 5, 1};
  const auto x = paired_bootstrap(a, b, 42), y = paired_bootstrap(a, b, 42);
  EXPECT_EQ(x.lo, y.lo);
  EXPECT_EQ(x.hi, y.hi);
  EXPECT_LE(x.lo, x.mean);
  EXPECT_GE(x.hi, x.mean);
}

TEST(PairedBootstrap, RejectsUnpairedLists) {
  EXPECT_THROW(paired_bootstrap({1, 2}, {1}), std::invalid_argument);
  EXPECT_EQ(paired_bootstrap({}, {}).prompts, 0u);
}

}  // namespace
