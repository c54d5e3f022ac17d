// Tensor parallel on one GPU: two "ranks" holding a slice of the KV heads each run
// cuda::tp_step with the all-reduce (sum) done by hand between them, and keep exactly the token
// indices, lengths and rows of one compressor holding all heads -- on random inputs, since the
// reduction is a concatenation (each rank's rows plus zeros) and the rest is the one-GPU code.
// The same step with NCCL between processes is what docs/INTEGRATION.md describes.
#include <gtest/gtest.h>

#include <vector>

#include "cuda_test_util.cuh"
#include "kvtrim/allocate/error_aware.hpp"
#include "kvtrim/allocate/head_adaptive.hpp"
#include "kvtrim/allocate/head_pool.hpp"
#include "kvtrim/allocate/pyramid.hpp"
#include "kvtrim/allocate/uniform.hpp"
#include "kvtrim/cuda/tensor_parallel.cuh"
#include "kvtrim/score/knorm.hpp"
#include "kvtrim/select/all_heads.hpp"
#include "kvtrim/select/retrieval_heads.hpp"

using kvtrim::index_t;
namespace kc = kvtrim::cuda;
using namespace kvtest;

namespace {

__global__ void add_kernel(float* a, const float* b, index_t n) {
  const index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) a[i] += b[i];
}

template <class T, class Sel, class Scorer, class Alloc>
void tp_case(const char* name, Sel sel, Scorer sc, Alloc al, int H, int G, int d, index_t n,
             index_t B, int split, index_t expect_reduce) {
  SCOPED_TRACE(name);
  const kvtrim::model_shape shape{4, H * G, H, d, 0};
  const index_t w = 8;
  kc::compressor<Sel, Scorer, Alloc> c(shape, {kvtrim::budget::tokens(B), w}, sel, sc, al);
  auto L = random_layer<T>(H, G, d, n, w, layout::head_major, 900u + static_cast<unsigned>(n));
  const size_t per_head = static_cast<size_t>(L.tokens * d);
  for (int layer = 0; layer < shape.layers; ++layer) {
    dbuf<T> k1, v1, k2, v2, q;
    k1.up(L.k), v1.up(L.v), k2.up(L.k), v2.up(L.v), q.up(L.q);
    // one GPU, all heads
    auto p1 = c.begin(n);
    const auto all = L.view(k1.p, v1.p, static_cast<const T*>(q.p));
    dbuf<char> ws1(c.template workspace_bytes<T>(p1, H));
    dbuf<int> len1(static_cast<size_t>(H));
    c.compress_layer(p1, layer, all, len1.p, ws1.p, ws1.n, 0);
    // two ranks: heads [0, split) and [split, H), queries of those heads
    auto p2 = c.begin(n);
    kvtrim::layer_kv<T> r[2];
    for (int i = 0; i < 2; ++i) {
      const int off = i == 0 ? 0 : split, hh = i == 0 ? split : H - split;
      r[i].keys = kvtrim::view3<T>(k2.p + off * per_head, hh, L.tokens, d, L.tokens * d, d);
      r[i].values = kvtrim::view3<T>(v2.p + off * per_head, hh, L.tokens, d, L.tokens * d, d);
      r[i].queries = kvtrim::view3<const T>(q.p + static_cast<size_t>(off * G * w * d), hh * G, w, d, w * d, d);
      r[i].length = n;
      r[i].kv_head_offset = off;
    }
    using step = kc::tp_step<decltype(c), T>;
    step s0(c, p2, layer, r[0]), s1(c, p2, layer, r[1]);
    ASSERT_EQ(s0.reduce_count(), expect_reduce * (n - w));
    ASSERT_EQ(s1.reduce_count(), s0.reduce_count());
    dbuf<float> b0(static_cast<size_t>(std::max<index_t>(1, s0.reduce_count()))),
        b1(static_cast<size_t>(std::max<index_t>(1, s1.reduce_count())));
    dbuf<char> w0(s0.workspace_bytes()), w1(s1.workspace_bytes());
    dbuf<int> len2(static_cast<size_t>(H));
    s0.score(b0.p, w0.p, w0.n, 0);
    s1.score(b1.p, w1.p, w1.n, 0);
    const index_t m = s0.reduce_count();
    if (m > 0) {  // the all-reduce (sum), by hand
      add_kernel<<<static_cast<unsigned>((m + 255) / 256), 256>>>(b0.p, b1.p, m);
      CU(cudaMemcpy(b1.p, b0.p, sizeof(float) * m, cudaMemcpyDeviceToDevice));
    }
    s0.select_evict(b0.p, len2.p, w0.p, w0.n, 0);
    s1.select_evict(b1.p, len2.p + split, w1.p, w1.n, 0);
    CU(cudaDeviceSynchronize());
    EXPECT_EQ(len1.down(), len2.down()) << "layer " << layer;
    const auto a = k1.down(), b = k2.down(), av = v1.down(), bv = v2.down();
    ASSERT_EQ(a.size(), b.size());
    EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(T))) << "keys, layer " << layer;
    EXPECT_EQ(0, std::memcmp(av.data(), bv.data(), av.size() * sizeof(T))) << "values, layer " << layer;
  }
}

}  // namespace

TEST(CudaTensorParallel, TwoRanksKeepWhatOneGpuKeeps) {
  using namespace kvtrim;
  window_attention snap;  // max 7
  window_attention shared = snap;
  shared.aggregate = aggregation::shared;
  auto head_scores = [](size_t q_heads) {  // distinct per layer and head
    std::vector<std::vector<double>> hs(4, std::vector<double>(q_heads));
    for (size_t l = 0; l < hs.size(); ++l)
      for (size_t h = 0; h < q_heads; ++h) hs[l][h] = static_cast<double>((h * 7 + l * 3) % 31) + 0.01 * h;
    return hs;
  };
  const auto hs = head_scores(32), hs9 = head_scores(9);
  const std::vector<double> le = {0.5, 1.0, 0.25, 2.0};
  for (index_t n : {index_t(700), index_t(5003)}) {
    // Llama-3.1-8B heads (8 KV heads of 4 query heads), two ranks of 4
    tp_case<bfloat16>("snapkv", all_heads{}, snap, uniform{}, 8, 4, 128, n, 256, 4, 0);
    tp_case<bfloat16>("pyramidkv", all_heads{}, snap, pyramid(20), 8, 4, 128, n, 256, 4, 0);
    tp_case<bfloat16>("headkv", all_heads{}, snap, head_pool(hs, 1.01, head_pool::total::exact), 8, 4, 128, n, 256, 4, 0);
    tp_case<bfloat16>("adakv", all_heads{}, snap, head_adaptive<uniform>(0.2), 8, 4, 128, n, 256, 4, 8);
    tp_case<bfloat16>("knorm", all_heads{}, knorm{}, uniform{}, 8, 4, 128, n, 256, 4, 0);  // no window scores
    tp_case<bfloat16>("compresskv", retrieval_heads(hs, 4), shared, error_aware(le, 32), 8, 4, 128, n, 256, 4, 4);
    // SmolLM2 heads (3 KV heads of 3 query heads): 3 heads do not split evenly, ranks of 1 and 2
    tp_case<bfloat16>("adakv smollm2", all_heads{}, snap, head_adaptive<uniform>(0.2), 3, 3, 64, n, 128, 1, 3);
    tp_case<kvtrim::half>("compresskv smollm2", retrieval_heads(hs9, 4), shared, error_aware(le, 32), 3, 3, 64, n, 128, 1, 4);
  }
}

TEST(CudaTensorParallel, CascadingMethodsAreRefused) {
  using namespace kvtrim;
  const model_shape shape{4, 8, 2, 64, 0};
  kc::compressor<all_heads, cake_scores, cake_layers> c(shape, {budget::tokens(64), 8}, all_heads{},
                                                        cake_scores{}, cake_layers());
  auto p = c.begin(100);
  auto L = random_layer<float>(2, 4, 64, 100, 8, layout::head_major, 3u);
  const auto kv = L.view(L.k.data(), L.v.data(), L.q.data());
  EXPECT_THROW((kc::tp_step<decltype(c), float>(c, p, 0, kv)), kvtrim::error);
}
