// Ragged decode attention: hand-worked cases, and the fast path against the scalar (double)
// reference on random ragged shapes for float, half and bfloat16 caches.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "kvtrim/attention/ragged_decode.hpp"

namespace {

using kvtrim::index_t;

// A cache with per-head allocations (like a host that frees what compaction dropped): head h
// holds lengths[h] rows of K and V, each row `stride` elements apart.
template <class T>
struct per_head_cache {
  std::vector<std::vector<T>> k, v;
  kvtrim::ragged_kv<T> kv;

  per_head_cache(const std::vector<index_t>& lengths, index_t d, index_t stride, std::mt19937& rng,
                 float amplitude = 1.0f) {
    std::normal_distribution<float> nd(0.0f, amplitude);
    kv.lengths = lengths;
    kv.head_dim = d;
    kv.row_stride = stride;
    for (index_t len : lengths) {
      k.emplace_back(static_cast<size_t>(len * stride));
      v.emplace_back(static_cast<size_t>(len * stride));
      for (T& x : k.back()) x = kvtrim::from_float<T>(nd(rng));
      for (T& x : v.back()) x = kvtrim::from_float<T>(nd(rng));
      kv.keys.push_back(len > 0 ? k.back().data() : nullptr);
      kv.values.push_back(len > 0 ? v.back().data() : nullptr);
    }
  }
};

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  float m = 0.0f;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

template <class T>
float random_ragged_max_error(const char* type_name) {
  // Lengths at page-like and block boundaries (16, 64) and at the 512-token work chunks.
  const std::vector<index_t> lens{0, 1, 15, 16, 17, 63, 64, 65, 1000, 511, 512, 513, 1025};
  std::mt19937 rng(2024);
  float worst = 0.0f;
  for (int group : {1, 3, 4, 9})  // 9: no register-blocked kernel, the Eigen GEMM path
    for (index_t d : {64, 128, 40}) {  // 40: not a multiple of the 16 SIMD lanes
      std::vector<index_t> l = lens;
      std::shuffle(l.begin(), l.end(), rng);
      per_head_cache<T> c(l, d, d + (d == 40 ? 5 : 0), rng);
      const index_t qn = static_cast<index_t>(l.size()) * group * d;
      std::vector<float> q(static_cast<size_t>(qn)), fast(q.size(), 7.0f), ref(q.size(), -7.0f);
      std::normal_distribution<float> nd(0.0f, 1.0f);
      for (float& x : q) x = nd(rng);
      const float scale = 1.0f / std::sqrt(static_cast<float>(d));
      kvtrim::ragged_decode_attention(q.data(), c.kv, group, scale, fast.data());
      kvtrim::ragged_decode_attention_reference(q.data(), c.kv, group, scale, ref.data());
      for (size_t h = 0; h < l.size(); ++h) {
        if (l[h] != 0) continue;
        for (index_t i = 0; i < group * d; ++i) {
          EXPECT_EQ(fast[h * static_cast<size_t>(group * d) + static_cast<size_t>(i)], 0.0f)
              << "length 0 must give zeros";
        }
      }
      const float err = max_abs_diff(fast, ref);
      EXPECT_LT(err, 2e-5f) << type_name << " G=" << group << " d=" << d;
      worst = std::max(worst, err);
    }
  std::printf("[ ragged ] %s: max |fast - reference| = %.3g over lengths 0..1025, G = 1,3,4,9\n",
              type_name, static_cast<double>(worst));
  return worst;
}

TEST(RaggedDecode, MatchesReferenceFloat) { random_ragged_max_error<float>("float"); }
TEST(RaggedDecode, MatchesReferenceHalf) { random_ragged_max_error<kvtrim::half>("half"); }
TEST(RaggedDecode, MatchesReferenceBfloat16) { random_ragged_max_error<kvtrim::bfloat16>("bfloat16"); }

TEST(RaggedDecode, HandWorkedWeights) {
  // d = 1, one KV head, two tokens: scores 0 and ln 3 -> weights 1/4, 3/4 -> 0.25*4 + 0.75*8 = 7.
  const float k[] = {0.0f, std::log(3.0f)}, v[] = {4.0f, 8.0f}, q[] = {1.0f};
  kvtrim::ragged_kv<float> kv;
  kv.keys = {k};
  kv.values = {v};
  kv.lengths = {2};
  kv.row_stride = 1;
  kv.head_dim = 1;
  float out = 0.0f;
  kvtrim::ragged_decode_attention(q, kv, 1, 1.0f, &out);
  EXPECT_NEAR(out, 7.0f, 1e-6f);
  kvtrim::ragged_decode_attention_reference(q, kv, 1, 1.0f, &out);
  EXPECT_NEAR(out, 7.0f, 1e-6f);
}

TEST(RaggedDecode, OneTokenReturnsItsValueRowAndZeroTokensGiveZeros) {
  std::mt19937 rng(3);
  per_head_cache<float> c({1, 0, 1}, 16, 16, rng);
  std::vector<float> q(3 * 2 * 16, 0.5f), out(q.size(), 9.0f);
  kvtrim::ragged_decode_attention(q.data(), c.kv, 2, 0.3f, out.data());
  for (int g = 0; g < 2; ++g)
    for (int i = 0; i < 16; ++i) {
      EXPECT_FLOAT_EQ(out[static_cast<size_t>((0 * 2 + g) * 16 + i)], c.v[0][static_cast<size_t>(i)]);
      EXPECT_EQ(out[static_cast<size_t>((1 * 2 + g) * 16 + i)], 0.0f);
      EXPECT_FLOAT_EQ(out[static_cast<size_t>((2 * 2 + g) * 16 + i)], c.v[2][static_cast<size_t>(i)]);
    }
}

TEST(RaggedDecode, LargeScoresStayFinite) {
  // Keys of amplitude 30 with d = 64 give scores in the thousands: exp would overflow without
  // the running max. The fast path must still agree with the reference.
  std::mt19937 rng(5);
  per_head_cache<float> c({700, 3, 1500}, 64, 64, rng, 30.0f);
  std::vector<float> q(3 * 4 * 64), fast(q.size()), ref(q.size());
  std::normal_distribution<float> nd(0.0f, 3.0f);
  for (float& x : q) x = nd(rng);
  kvtrim::ragged_decode_attention(q.data(), c.kv, 4, 1.0f, fast.data());
  kvtrim::ragged_decode_attention_reference(q.data(), c.kv, 4, 1.0f, ref.data());
  for (float x : fast) ASSERT_TRUE(std::isfinite(x));
  // Logits of ~10^3 carry float rounding of ~10^-4 (the reference sums in double), which moves
  // outputs of amplitude 30 by ~10^-3: agree to 1e-2 (3e-4 of the amplitude).
  EXPECT_LT(max_abs_diff(fast, ref), 1e-2f);
}

TEST(RaggedDecode, OutputMayAliasTheQuery) {
  std::mt19937 rng(8);
  per_head_cache<kvtrim::bfloat16> c({100, 600}, 32, 32, rng);
  std::vector<float> q(2 * 3 * 32);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (float& x : q) x = nd(rng);
  std::vector<float> separate(q.size()), inplace = q, ref_separate(q.size()), ref_inplace = q;
  kvtrim::ragged_decode_attention(q.data(), c.kv, 3, 0.2f, separate.data());
  kvtrim::ragged_decode_attention(inplace.data(), c.kv, 3, 0.2f, inplace.data());
  EXPECT_EQ(separate, inplace);
  kvtrim::ragged_decode_attention_reference(q.data(), c.kv, 3, 0.2f, ref_separate.data());
  kvtrim::ragged_decode_attention_reference(ref_inplace.data(), c.kv, 3, 0.2f, ref_inplace.data());
  EXPECT_EQ(ref_separate, ref_inplace);
}

TEST(RaggedDecode, ResultDoesNotDependOnThreadCount) {
#if defined(_OPENMP)
  std::mt19937 rng(9);
  per_head_cache<kvtrim::half> c({30000, 17, 21000}, 64, 64, rng);  // above the threading threshold
  std::vector<float> q(3 * 3 * 64), one(q.size()), two(q.size());
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (float& x : q) x = nd(rng);
  const int before = omp_get_max_threads();
  omp_set_num_threads(1);
  kvtrim::ragged_decode_attention(q.data(), c.kv, 3, 0.125f, one.data());
  omp_set_num_threads(2);
  kvtrim::ragged_decode_attention(q.data(), c.kv, 3, 0.125f, two.data());
  omp_set_num_threads(before);
  EXPECT_EQ(one, two);
#else
  GTEST_SKIP() << "built without OpenMP";
#endif
}

TEST(RaggedDecode, FromStridedViewsEqualsPerHeadPointers) {
  // A token-major [t][h][d] buffer of 4 KV heads x 300 tokens, heads compacted to different
  // lengths; make_ragged_kv must describe the same rows as hand-built per-head pointers.
  const index_t H = 4, N = 300, d = 48;
  std::mt19937 rng(12);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> kbuf(static_cast<size_t>(H * N * d)), vbuf(kbuf.size());
  for (float& x : kbuf) x = nd(rng);
  for (float& x : vbuf) x = nd(rng);
  auto kview = kvtrim::view3<float>::token_major(kbuf.data(), H, N, d);
  auto vview = kvtrim::view3<float>::token_major(vbuf.data(), H, N, d);
  const std::vector<index_t> lengths{300, 0, 40, 129};
  const kvtrim::ragged_kv<float> a = kvtrim::make_ragged_kv(kview, vview, lengths);
  kvtrim::ragged_kv<float> b;
  b.lengths = lengths;
  b.head_dim = d;
  b.row_stride = H * d;
  for (index_t h = 0; h < H; ++h) {
    b.keys.push_back(kbuf.data() + h * d);
    b.values.push_back(vbuf.data() + h * d);
  }
  EXPECT_EQ(a.row_stride, H * d);
  EXPECT_EQ(a.keys, b.keys);
  EXPECT_EQ(a.values, b.values);
  std::vector<float> q(static_cast<size_t>(H * 2 * d)), oa(q.size()), ob(q.size());
  for (float& x : q) x = nd(rng);
  kvtrim::ragged_decode_attention(q.data(), a, 2, 0.1f, oa.data());
  kvtrim::ragged_decode_attention_reference(q.data(), b, 2, 0.1f, ob.data());
  EXPECT_LT(max_abs_diff(oa, ob), 1e-5f);
  // A const view works too.
  const kvtrim::view3<const float> ck = kview, cv = vview;
  EXPECT_EQ(kvtrim::make_ragged_kv(ck, cv, lengths).keys, a.keys);
}

TEST(RaggedDecode, HalfConversionIsExactForEveryBitPattern) {
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const auto h = static_cast<std::uint16_t>(b);
    const float fast = kvtrim::detail::half_bits_to_float(h), ref = kvtrim::detail::half_to_float(h);
    if (std::isnan(ref)) {
      ASSERT_TRUE(std::isnan(fast)) << b;
    } else {
      ASSERT_EQ(kvtrim::detail::float_bits(fast), kvtrim::detail::float_bits(ref)) << b;
    }
  }
  // The vectorised row loader agrees as well (F16C path when the build targets it).
  std::vector<kvtrim::half> row(37);
  for (size_t i = 0; i < row.size(); ++i) row[i].bits = static_cast<std::uint16_t>(i * 1777 + 3);
  std::vector<float> buf(row.size());
  const float* got = kvtrim::detail::load_row(row.data(), 37, buf.data());
  for (size_t i = 0; i < row.size(); ++i)
    if (!std::isnan(got[i])) {
      EXPECT_EQ(got[i], kvtrim::to_float(row[i])) << i;
    }
}

TEST(RaggedDecode, BadInputIsRejectedAndNothingWritten) {
  std::mt19937 rng(4);
  per_head_cache<float> c({10, 5}, 8, 8, rng);
  std::vector<float> q(2 * 2 * 8, 1.0f), out(q.size(), 42.0f);
  auto expect_bad = [&](const kvtrim::ragged_kv<float>& kv, int group, float scale, const float* qp,
                        float* op) {
    EXPECT_THROW(kvtrim::ragged_decode_attention(qp, kv, group, scale, op), kvtrim::error);
    EXPECT_THROW(kvtrim::ragged_decode_attention_reference(qp, kv, group, scale, op), kvtrim::error);
  };
  expect_bad(c.kv, 2, 1.0f, nullptr, out.data());
  expect_bad(c.kv, 2, 1.0f, q.data(), nullptr);
  expect_bad(c.kv, 0, 1.0f, q.data(), out.data());
  expect_bad(c.kv, 2, std::numeric_limits<float>::infinity(), q.data(), out.data());
  expect_bad(c.kv, 2, std::nanf(""), q.data(), out.data());
  auto kv = c.kv;
  kv.lengths[1] = -1;
  expect_bad(kv, 2, 1.0f, q.data(), out.data());
  kv = c.kv;
  kv.values[0] = nullptr;
  expect_bad(kv, 2, 1.0f, q.data(), out.data());
  kv = c.kv;
  kv.row_stride = 7;  // rows of 8 would overlap
  expect_bad(kv, 2, 1.0f, q.data(), out.data());
  kv = c.kv;
  kv.head_dim = 0;
  expect_bad(kv, 2, 1.0f, q.data(), out.data());
  kv = c.kv;
  kv.keys.pop_back();
  expect_bad(kv, 2, 1.0f, q.data(), out.data());
  kv = c.kv;
  kv.keys.clear();
  kv.values.clear();
  kv.lengths.clear();
  expect_bad(kv, 2, 1.0f, q.data(), out.data());
  for (float x : out) EXPECT_EQ(x, 42.0f);

  // make_ragged_kv
  std::vector<float> kb(2 * 10 * 8), vb(kb.size());
  auto kview = kvtrim::view3<float>::head_major(kb.data(), 2, 10, 8);
  auto vview = kvtrim::view3<float>::head_major(vb.data(), 2, 10, 8);
  EXPECT_NO_THROW(kvtrim::make_ragged_kv(kview, vview, {10, 0}));
  EXPECT_THROW(kvtrim::make_ragged_kv(kview, vview, {11, 0}), kvtrim::error);  // > tokens
  EXPECT_THROW(kvtrim::make_ragged_kv(kview, vview, {1, -1}), kvtrim::error);
  EXPECT_THROW(kvtrim::make_ragged_kv(kview, vview, {1}), kvtrim::error);     // count
  EXPECT_THROW(kvtrim::make_ragged_kv(kview, kvtrim::view3<float>::token_major(vb.data(), 2, 10, 8), {1, 1}),
               kvtrim::error);  // token strides differ
  EXPECT_THROW(kvtrim::make_ragged_kv(kvtrim::view3<float>(kb.data(), 2, 10, 4, 80, 8, 2),
                                      kvtrim::view3<float>(vb.data(), 2, 10, 4, 80, 8, 2), {1, 1}),
               kvtrim::error);  // dim stride 2
  EXPECT_THROW(kvtrim::make_ragged_kv(kview, kvtrim::view3<float>::head_major(vb.data(), 2, 10, 4), {1, 1}),
               kvtrim::error);  // shapes differ
}

}  // namespace
