// The registry front on the device: kvtrim::cuda::make_method builds every registered method
// from its registry entry, and on planted inputs it keeps exactly what kvtrim::make_method (the
// CPU front over the same entries) keeps, layer after layer, with byte-equal rows.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "cuda_test_util.cuh"
#include "kvtrim/compose/method.hpp"
#include "kvtrim/compose/registry.hpp"
#include "kvtrim/cuda/method.cuh"

using kvtrim::index_t;
namespace kc = kvtrim::cuda;
using namespace kvtest;

TEST(CudaRegistry, EveryRegisteredMethodMatchesTheCpuFront) {
  const int H = 4, G = 3, d = 64, L = 4;
  const index_t n = 3001, w = 8;
  const kvtrim::model_shape shape{L, H * G, H, d, 0};
  kvtrim::profile prof;
  prof.model = "synthetic";
  prof.layers = L;
  prof.q_heads = H * G;
  prof.kv_heads = H;
  for (int l = 0; l < L; ++l) {
    prof.semantic_retrieval.emplace_back();
    prof.retrieval_reasoning.emplace_back();
    for (int h = 0; h < H * G; ++h) {
      prof.semantic_retrieval.back().push_back(static_cast<double>((l * 5 + h * 7) % 13));
      prof.retrieval_reasoning.back().push_back(static_cast<double>((l * 3 + h * 11) % 17));
    }
    prof.layer_error.push_back(0.1 + 0.2 * l);
  }
  for (const std::string& name : kvtrim::method_names()) {
    kvtrim::method_spec spec;
    spec.name = name;
    spec.target = kvtrim::budget::tokens(200);
    spec.window = w;
    spec.prof = &prof;
    if (name == "cake") spec.params = {{"gamma", "0"}};  // see methods_test.cu: planted inputs
    // CompressKV's shared row summed over heads whose planted keys sit 3 tokens apart: avg
    // pooling makes their neighbours near-ties that f32 rounding orders differently on the two
    // paths, max pooling makes them exact ties (CudaScores checks avg pooling within tolerance)
    if (name == "compresskv" || name == "compresskv-uniform")
      spec.params = {{"pooling", "max"}, {"kernel", "7"}};
    const kvtrim::method host = kvtrim::make_method(spec, shape);
    const bool no_device_scorer = name == "tova" || name == "keydiff" || name == "criticalkv" ||
                                  name == "h2o" || name == "expected_attention" ||
                                  name == "snapkv-paper" || name == "pyramidkv-paper";
    if (no_device_scorer) {  // a clear error naming the method
      try {
        kc::make_method(spec, shape);
        ADD_FAILURE() << name << ": cuda::make_method accepted a method without a device scorer";
      } catch (const kvtrim::error& e) {
        EXPECT_NE(std::string(e.what()).find("has no CUDA path"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
      }
      continue;
    }
    if (kvtrim::find_method(name).cascades) {  // no device re-trim yet (CAKE): refused
      EXPECT_THROW(kc::make_method(spec, shape), kvtrim::error) << name;
      continue;
    }
    const kc::method dev = kc::make_method(spec, shape);
    auto hs = host.begin(n);
    auto ds = dev.begin(n);
    dbuf<char> ws(ds->workspace_bytes(H, kc::element::bf16));
    for (int layer = 0; layer < L; ++layer) {
      std::vector<int> planted(static_cast<size_t>(H));
      for (int h = 0; h < H; ++h) planted[static_cast<size_t>(h)] = 230 - 20 * ((h + layer) % 3);
      auto Lh = planted_layer<kvtrim::bfloat16>(H, G, d, n, w, layout::token_major,
                                                300u + static_cast<unsigned>(layer), planted);
      dbuf<kvtrim::bfloat16> k, v, q;
      k.up(Lh.k);
      v.up(Lh.v);
      q.up(Lh.q);
      auto hv = Lh;
      const auto hl = hv.view(hv.k.data(), hv.v.data(), hv.q.data());
      const auto sel = hs->select(layer, hs->score(layer, hl));
      hs->evict(sel, hl);
      const auto dl = Lh.view(k.p, v.p, static_cast<const kvtrim::bfloat16*>(q.p));
      dbuf<int> lens(static_cast<size_t>(H));
      std::vector<index_t> lh(static_cast<size_t>(H));
      ds->compress_layer(layer, dl, lens.p, ws.p, ws.n, 0, lh.data());
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      for (int h = 0; h < H; ++h)
        ASSERT_EQ(lh[static_cast<size_t>(h)], static_cast<index_t>(sel.keep[static_cast<size_t>(h)].size()))
            << name << " layer " << layer << " head " << h;
      EXPECT_TRUE(bytes_equal(k.down(), hv.k)) << name << " layer " << layer << " K";
      EXPECT_TRUE(bytes_equal(v.down(), hv.v)) << name << " layer " << layer << " V";
    }
  }
}
