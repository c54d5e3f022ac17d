// Device top-k, Ada-KV's split, compaction, copy_to and ragged decode against the host reference,
// exactly (indices, lengths, bytes) or within 1e-3 relative (decode).
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

#include "cuda_test_util.cuh"
#include "kvtrim/allocate/head_adaptive.hpp"
#include "kvtrim/attention/ragged_decode.hpp"
#include "kvtrim/cuda/compact.cuh"
#include "kvtrim/cuda/head_adaptive.cuh"
#include "kvtrim/cuda/ragged_decode.cuh"
#include "kvtrim/cuda/select.cuh"
#include "kvtrim/evict/top_k.hpp"

using kvtrim::index_t;
namespace kc = kvtrim::cuda;
using namespace kvtest;

namespace {

// Scores quantised to `levels` values so that ties are everywhere.
kvtrim::token_scores quantised_scores(bool shared, int H, index_t n, index_t w, int levels,
                                      unsigned seed) {
  kvtrim::token_scores s = kvtrim::token_scores::make(shared, H, 0, n, w);
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> u(0, levels - 1);
  for (auto& x : s.values) x = static_cast<float>(u(rng)) * 0.25f - 1.0f;
  if (!s.values.empty()) s.values[0] = -0.0f;  // -0 ties with +0
  return s;
}

struct device_selection {
  std::vector<std::vector<index_t>> keep;
};

device_selection run_select(const kvtrim::token_scores& s, const std::vector<int>& budgets_in,
                            bool adaptive_inner = false, double alpha = 0.2) {
  const int H = static_cast<int>(s.kv_heads);
  const index_t n = s.prompt_length();
  dbuf<float> vals;
  vals.up(s.values);
  kc::device_scores ds;
  ds.values = vals.p;
  ds.rows = static_cast<int>(s.rows());
  ds.shared = s.shared;
  ds.kv_heads = H;
  ds.candidates = s.candidates;
  ds.window = s.window;
  dbuf<int> budgets(static_cast<size_t>(H)), keep(static_cast<size_t>(H * n)),
      lengths(static_cast<size_t>(H));
  dbuf<char> ws(std::max(kc::select_top_workspace_bytes(H, n, s.window),
                         kc::head_adaptive_workspace_bytes(H)));
  kc::head_ints hb;
  hb.count = H;
  for (int h = 0; h < H; ++h) hb.v[h] = budgets_in[static_cast<size_t>(h)];
  if (adaptive_inner)
    kc::head_adaptive_budgets(ds, hb, alpha, budgets.p, ws.p, ws.n, 0);
  else
    kc::upload_head_ints(hb, budgets.p, 0);
  kc::select_top(ds, budgets.p, keep.p, n, lengths.p, ws.p, ws.n, 0);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const auto k = keep.down();
  const auto l = lengths.down();
  device_selection out;
  for (int h = 0; h < H; ++h)
    out.keep.emplace_back(k.begin() + h * n, k.begin() + h * n + l[static_cast<size_t>(h)]);
  return out;
}

}  // namespace

TEST(CudaSelect, TopKMatchesHostWithTiesEverywhere) {
  struct shape_case { int H; index_t n, w; };
  for (const shape_case sc : {shape_case{1, 1, 1}, shape_case{3, 8, 8}, shape_case{3, 9, 8},
                              shape_case{8, 5000, 8}, shape_case{7, 4096 * 3 + 17, 16},
                              // both sides of the one-block path's limit (block_select.cuh)
                              shape_case{2, kc::detail::block_select_max + 8, 8},
                              shape_case{2, kc::detail::block_select_max + 9, 8},
                              shape_case{4, 131072, 8}})
    for (bool shared : {false, true})
      for (int levels : {3, 1000}) {
        const auto s = quantised_scores(shared, sc.H, sc.n, sc.w, levels, 11u + static_cast<unsigned>(sc.n));
        std::vector<int> b(static_cast<size_t>(sc.H));
        std::vector<index_t> bi(b.size());
        for (int h = 0; h < sc.H; ++h) {
          const index_t choices[] = {1, sc.w, sc.w + 1, 256, sc.n / 2 + 1, sc.n, sc.n + 9};
          b[static_cast<size_t>(h)] = static_cast<int>(choices[(h * 3 + levels) % 7]);
          bi[static_cast<size_t>(h)] = b[static_cast<size_t>(h)];
        }
        const auto want = kvtrim::select_top(s, bi);
        const auto got = run_select(s, b);
        for (int h = 0; h < sc.H; ++h)
          ASSERT_EQ(got.keep[static_cast<size_t>(h)], want.keep[static_cast<size_t>(h)])
              << "H " << sc.H << " n " << sc.n << " head " << h << " shared " << shared
              << " levels " << levels;
      }
}

TEST(CudaSelect, AdaKVSplitMatchesHost) {
  for (int H : {1, 3, 8})
    // both sides of the one-block split's limit: 3 x 5003 and 8 x 3000 below, 8 x 5003 above
    for (index_t n : {index_t(64), index_t(5003), index_t(3000 + 8), index_t(40000)})
      for (int levels : {4, 100000})
        for (double alpha : {0.0, 0.2, 1.0}) {
          const index_t w = 8;
          const auto s = quantised_scores(false, H, n, w, levels, 5u + static_cast<unsigned>(H * n));
          kvtrim::model_shape shape{2, H * 4, H, 64, 0};
          for (index_t B : {index_t(4), index_t(40), index_t(300), n}) {
            kvtrim::head_adaptive<kvtrim::uniform> ada(alpha);
            auto st = ada.begin(shape, B, n, w);
            const auto budgets = ada.head_budgets(st, 1, s);
            const auto want = kvtrim::select_top(s, budgets);
            kvtrim::uniform u;
            auto ust = u.begin(shape, B, n, w);
            const auto inner = u.head_budgets(ust, 1, s);
            std::vector<int> ib(inner.begin(), inner.end());
            const auto got = run_select(s, ib, true, alpha);
            for (int h = 0; h < H; ++h)
              ASSERT_EQ(got.keep[static_cast<size_t>(h)], want.keep[static_cast<size_t>(h)])
                  << "H " << H << " n " << n << " B " << B << " alpha " << alpha << " head " << h;
          }
        }
}

template <class T>
void compaction_case(layout lay, index_t n, int H, int d, bool copy) {
  auto L = random_layer<T>(H, 1, d, n, 1, lay, 3u + static_cast<unsigned>(n));
  std::mt19937 rng(9);
  std::vector<std::vector<index_t>> keep(static_cast<size_t>(H));
  std::vector<int> flat(static_cast<size_t>(H * n)), lens(static_cast<size_t>(H));
  for (int h = 0; h < H; ++h) {
    const index_t prefix = h == 0 ? n / 3 : 0;  // an untouched prefix on head 0
    for (index_t t = 0; t < n; ++t)
      if (t < prefix || t == n - 1 || std::uniform_int_distribution<int>(0, 9)(rng) < 2 + h % 5)
        keep[static_cast<size_t>(h)].push_back(t);
    if (h == H - 1 && n > 1) keep[static_cast<size_t>(h)] = {n - 1};
    lens[static_cast<size_t>(h)] = static_cast<int>(keep[static_cast<size_t>(h)].size());
    for (size_t i = 0; i < keep[static_cast<size_t>(h)].size(); ++i)
      flat[static_cast<size_t>(h * n) + i] = static_cast<int>(keep[static_cast<size_t>(h)][i]);
  }
  dbuf<T> k, v, dk, dv;
  k.up(L.k);
  v.up(L.v);
  dbuf<int> kp, lp;
  kp.up(flat);
  lp.up(lens);
  const auto lv = L.view(k.p, v.p, static_cast<const T*>(nullptr));
  dbuf<char> ws(kc::compact_workspace_bytes<T>(H, d, n));
  if (copy) {
    dk.up(L.v);  // destination pre-filled (sentinel: must stay where not written)
    dv.up(L.k);
    const auto dst = L.view(dk.p, dv.p, static_cast<const T*>(nullptr));
    kc::copy_to(lv.keys, lv.values, dst.keys, dst.values, kp.p, n, lp.p, n, ws.p, ws.n, 0);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    // rows [0, len) = gathered source rows; the rest = the sentinel fill
    std::vector<T> ek = L.v, ev = L.k;
    for (int h = 0; h < H; ++h)
      for (size_t i = 0; i < keep[static_cast<size_t>(h)].size(); ++i)
        for (int e = 0; e < d; ++e) {
          ek[L.at(h, static_cast<index_t>(i), e)] = L.k[L.at(h, keep[static_cast<size_t>(h)][i], e)];
          ev[L.at(h, static_cast<index_t>(i), e)] = L.v[L.at(h, keep[static_cast<size_t>(h)][i], e)];
        }
    EXPECT_TRUE(bytes_equal(dk.down(), ek));
    EXPECT_TRUE(bytes_equal(dv.down(), ev));
    EXPECT_TRUE(bytes_equal(k.down(), L.k));  // source untouched
  } else {
    kc::compact_in_place(lv.keys, lv.values, kp.p, n, lp.p, n, ws.p, ws.n, 0);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_TRUE(bytes_equal(k.down(), gathered(L, L.k, keep))) << "n " << n << " d " << d;
    EXPECT_TRUE(bytes_equal(v.down(), gathered(L, L.v, keep))) << "n " << n << " d " << d;
  }
}

TEST(CudaEvict, CompactInPlaceAndCopyToAreByteExact) {
  for (layout lay : {layout::head_major, layout::token_major, layout::padded})
    for (index_t n : {index_t(1), index_t(9), index_t(4099), index_t(70000)})
      for (bool copy : {false, true}) {
        compaction_case<kvtrim::bfloat16>(lay, n, 8, 128, copy);
        compaction_case<float>(lay, n, 3, 64, copy);
        compaction_case<kvtrim::half>(lay, n, 2, 72, copy);
      }
}

template <class T>
void decode_case(int H, int G, int d, const std::vector<int>& lens, layout lay) {
  const index_t maxlen = *std::max_element(lens.begin(), lens.end());
  auto L = random_layer<T>(H, 1, d, std::max<index_t>(maxlen, 1), 1, lay, 17u + static_cast<unsigned>(G));
  std::vector<float> q(static_cast<size_t>(H * G * d));
  std::mt19937 rng(4);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (auto& x : q) x = nd(rng);
  // host reference over the same rows (a ragged view needs contiguous rows: copy per head)
  std::vector<std::vector<T>> hk(static_cast<size_t>(H)), hv(static_cast<size_t>(H));
  kvtrim::ragged_kv<T> r;
  r.row_stride = d;
  r.head_dim = d;
  for (int h = 0; h < H; ++h) {
    for (index_t t = 0; t < lens[static_cast<size_t>(h)]; ++t)
      for (int e = 0; e < d; ++e) {
        hk[static_cast<size_t>(h)].push_back(L.k[L.at(h, t, e)]);
        hv[static_cast<size_t>(h)].push_back(L.v[L.at(h, t, e)]);
      }
    r.keys.push_back(hk[static_cast<size_t>(h)].data());
    r.values.push_back(hv[static_cast<size_t>(h)].data());
    r.lengths.push_back(lens[static_cast<size_t>(h)]);
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  std::vector<float> want(q.size());
  kvtrim::ragged_decode_attention_reference(q.data(), r, G, scale, want.data());
  dbuf<T> k, v;
  k.up(L.k);
  v.up(L.v);
  dbuf<float> dq, out(q.size());
  dq.up(q);
  dbuf<int> dl;
  dl.up(lens);
  const auto lv = L.view(k.p, v.p, static_cast<const T*>(nullptr));
  dbuf<char> ws(kc::ragged_decode_workspace_bytes<T>(H, G, d, L.tokens));
  kc::ragged_decode<T>(dq.p, lv.keys, lv.values, dl.p, L.tokens, G, scale, out.p, ws.p, ws.n, 0);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const auto got = out.down();
  float ref = 0.0f, err = 0.0f;
  for (size_t i = 0; i < got.size(); ++i) {
    ref = std::max(ref, std::fabs(want[i]));
    err = std::max(err, std::fabs(got[i] - want[i]));
  }
  EXPECT_LE(err, 1e-3f * std::max(ref, 1e-6f)) << "H " << H << " G " << G << " d " << d;
}

TEST(CudaDecode, RaggedDecodeWithin1e3OfHostReference) {
  for (int G : {1, 3, 4, 7, 8}) {
    decode_case<kvtrim::bfloat16>(8, G, 128, {0, 1, 8, 257, 5000, 40000, 131, 1024}, layout::head_major);
    decode_case<float>(3, G, 64, {33, 0, 9000}, layout::token_major);
    decode_case<kvtrim::half>(2, G, 96, {1, 2049}, layout::padded);
  }
}
