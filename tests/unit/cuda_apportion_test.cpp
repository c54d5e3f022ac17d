// The CUDA backend's fixed-size apportion (kvtrim/cuda/apportion.hpp, run by one device thread
// for Ada-KV's head split) against the host's allocate/apportion.hpp: identical results on
// random quotas, ties, caps and water-filling. Plain C++: runs in CI without a GPU.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "kvtrim/allocate/apportion.hpp"
#include "kvtrim/cuda/apportion.hpp"

TEST(CudaApportion, SmallApportionEqualsHostApportion) {
  std::mt19937 rng(3);
  for (int trial = 0; trial < 20000; ++trial) {
    const int k = 1 + trial % 17;
    std::vector<double> q(static_cast<size_t>(k));
    std::vector<kvtrim::index_t> hi(static_cast<size_t>(k));
    const int mode = trial % 4;
    double sum = 0;
    for (int i = 0; i < k; ++i) {
      const double u = std::uniform_real_distribution<double>(0, 50)(rng);
      q[static_cast<size_t>(i)] = mode == 0 ? std::floor(u) + 0.5 : (mode == 1 ? std::floor(u / 10) : u);
      hi[static_cast<size_t>(i)] = std::uniform_int_distribution<int>(0, mode == 3 ? 20 : 60)(rng);
      sum += q[static_cast<size_t>(i)];
    }
    const auto total = static_cast<kvtrim::index_t>(std::llround(sum)) + (trial % 5) - 2;
    if (total < 0) continue;
    const auto want = kvtrim::detail::apportion(q, total, hi);
    std::vector<std::int64_t> h64(hi.begin(), hi.end()), got(static_cast<size_t>(k));
    kvtrim::cuda::detail::apportion_small(q.data(), k, total, h64.data(), got.data());
    for (int i = 0; i < k; ++i)
      ASSERT_EQ(got[static_cast<size_t>(i)], want[static_cast<size_t>(i)]) << "trial " << trial << " item " << i;
  }
}
