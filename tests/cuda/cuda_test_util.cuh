#pragma once
// Shared by the CUDA suites: device buffers, host layers of any element type and layout, and
// planted inputs whose ranking no f32 rounding can change.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kvtrim/core/element.hpp"
#include "kvtrim/core/layer_kv.hpp"
#include "kvtrim/cuda/common.cuh"

namespace kvtest {

#define CU(x) ASSERT_EQ((x), cudaSuccess) << cudaGetErrorString(x)

template <class T>
struct dbuf {
  T* p = nullptr;
  size_t n = 0;
  explicit dbuf(size_t count = 0) { resize(count); }
  void resize(size_t count) {
    if (p) cudaFree(p);
    p = nullptr;
    n = count;
    if (count) EXPECT_EQ(cudaMalloc(&p, count * sizeof(T)), cudaSuccess);
  }
  ~dbuf() {
    if (p) cudaFree(p);
  }
  dbuf(const dbuf&) = delete;
  dbuf& operator=(const dbuf&) = delete;
  void up(const std::vector<T>& h) {
    resize(h.size());
    if (n) EXPECT_EQ(cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  std::vector<T> down() const {
    std::vector<T> h(n);
    if (n) EXPECT_EQ(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
  }
};

enum class layout { head_major, token_major, padded };

// One layer's K, V and window queries on the host, in a chosen layout; `tokens` >= n rows per
// head (rows past n are padding that must never be read as prompt nor written).
template <class T>
struct host_layer {
  int H = 0, G = 0, d = 0;
  kvtrim::index_t n = 0, w = 0, tokens = 0;
  layout lay = layout::head_major;
  std::vector<T> k, v, q;

  kvtrim::index_t sh() const {
    return lay == layout::token_major ? d : (lay == layout::padded ? (tokens + 3) * (d + 8) : tokens * d);
  }
  kvtrim::index_t st() const { return lay == layout::token_major ? H * d : (lay == layout::padded ? d + 8 : d); }
  size_t size() const {
    return lay == layout::token_major ? static_cast<size_t>(tokens * H * d) : static_cast<size_t>(H * sh());
  }
  template <class P>
  kvtrim::layer_kv<P> view(P* kp, P* vp, const P* qp) const {
    kvtrim::layer_kv<P> l;
    l.keys = kvtrim::view3<P>(kp, H, tokens, d, sh(), st());
    l.values = kvtrim::view3<P>(vp, H, tokens, d, sh(), st());
    l.queries = kvtrim::view3<const P>(qp, H * G, w, d, w * d, d);
    l.length = n;
    return l;
  }
  size_t at(kvtrim::index_t h, kvtrim::index_t t, kvtrim::index_t e) const {
    return static_cast<size_t>(h * sh() + t * st() + e);
  }
};

template <class T>
T val(float x) {
  return kvtrim::from_float<T>(x);
}

// Random layer: N(0, 1) keys / values / queries (queries scaled so softmax is not flat).
template <class T>
host_layer<T> random_layer(int H, int G, int d, kvtrim::index_t n, kvtrim::index_t w, layout lay,
                           unsigned seed, kvtrim::index_t pad = 5) {
  host_layer<T> L;
  L.H = H, L.G = G, L.d = d, L.n = n, L.w = w, L.tokens = n + pad, L.lay = lay;
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  L.k.resize(L.size());
  L.v.resize(L.size());
  for (auto& x : L.k) x = val<T>(nd(rng));
  for (auto& x : L.v) x = val<T>(nd(rng));
  L.q.resize(static_cast<size_t>(H * G * w * d));
  for (auto& x : L.q) x = val<T>(2.0f * nd(rng));
  return L;
}

// Planted layer: per KV head a direction u; window queries of its G heads are (1 + 0.1 i) * u *
// sqrt(d); the other keys are exactly 0; `planted[h]` tokens at spaced positions (8 apart or
// more, so max-7 pooling windows never overlap) get keys (2 + 0.016 rank) * u (P <= 250), so their scores
// are strictly graded by steps far beyond any f32 rounding, and a planted token's pooling
// neighbours are exact ties broken by index on both paths. Budgets should stay below ~7 P + w:
// the host's blockwise softmax gives the all-zero keys scores that differ in the last bit.
template <class T>
host_layer<T> planted_layer(int H, int G, int d, kvtrim::index_t n, kvtrim::index_t w, layout lay,
                            unsigned seed, const std::vector<int>& planted) {
  host_layer<T> L = random_layer<T>(H, G, d, n, w, lay, seed);
  std::mt19937 rng(seed + 7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (int h = 0; h < H; ++h) {
    std::vector<float> u(static_cast<size_t>(d));
    float norm = 0.0f;
    for (auto& x : u) {
      x = nd(rng);
      norm += x * x;
    }
    for (auto& x : u) x /= std::sqrt(norm);
    for (kvtrim::index_t t = 0; t < L.tokens; ++t)
      for (int e = 0; e < d; ++e) L.k[L.at(h, t, e)] = val<T>(0.0f);
    const kvtrim::index_t c = n - w;
    const int P = planted[static_cast<size_t>(h)];
    const kvtrim::index_t step = P > 0 ? std::max<kvtrim::index_t>(1, c / P) : 1;
    for (int r = 0; r < P && r * step < c; ++r) {
      const kvtrim::index_t t = (r * step + static_cast<kvtrim::index_t>(h) * 3) % c;
      // strengths 0.016 apart: still distinct after the keys are rounded to bf16
      const float a = 2.0f + 0.016f * static_cast<float>((r * 37) % P);
      for (int e = 0; e < d; ++e) L.k[L.at(h, t, e)] = val<T>(a * u[static_cast<size_t>(e)]);
    }
    for (int g = 0; g < G; ++g)
      for (kvtrim::index_t i = 0; i < w; ++i)
        for (int e = 0; e < d; ++e)
          L.q[static_cast<size_t>(((h * G + g) * w + i) * d + e)] =
              val<T>((1.0f + 0.1f * static_cast<float>(i)) * u[static_cast<size_t>(e)] *
                     std::sqrt(static_cast<float>(d)));
  }
  return L;
}

// Expected K (or V) buffer after compaction: rows [0, len_h) of head h = original rows keep[h],
// every other element unchanged.
template <class T>
std::vector<T> gathered(const host_layer<T>& L, const std::vector<T>& orig,
                        const std::vector<std::vector<kvtrim::index_t>>& keep) {
  std::vector<T> out = orig;
  for (int h = 0; h < L.H; ++h)
    for (size_t i = 0; i < keep[static_cast<size_t>(h)].size(); ++i)
      for (int e = 0; e < L.d; ++e)
        out[L.at(h, static_cast<kvtrim::index_t>(i), e)] =
            orig[L.at(h, keep[static_cast<size_t>(h)][i], e)];
  return out;
}

template <class T>
bool bytes_equal(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

}  // namespace kvtest
