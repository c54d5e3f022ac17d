// The smallest host: one layer's K, V and window queries in plain arrays, compressed with SnapKV
// and with CompressKV (semantic retrieval heads + error-aware budgets from an in-memory profile).
// A real engine does the same once per layer at the end of its prefill.
#include <cstdio>
#include <random>
#include <vector>

#include "kvtrim/kvtrim.hpp"

int main() {
  // A toy GQA model: 4 layers, 8 query heads sharing 2 KV heads, head_dim 32.
  const kvtrim::model_shape shape{4, 8, 2, 32, 8192};
  const kvtrim::index_t n = 1024, w = 8;

  // What calibration would produce (kvtrim calibrate): head scores and layer error weights.
  kvtrim::profile prof;
  prof.model = "toy";
  prof.layers = shape.layers;
  prof.q_heads = shape.q_heads;
  prof.kv_heads = shape.kv_heads;
  for (int l = 0; l < shape.layers; ++l) prof.semantic_retrieval.push_back({1, 8, 2, 7, 3, 6, 4, 5});
  prof.layer_error = {0.4, 0.3, 0.2, 0.1};

  std::mt19937 rng(1);
  std::normal_distribution<float> gauss;
  for (const char* name : {"snapkv", "compresskv"}) {
    kvtrim::method_spec cfg;
    cfg.name = name;
    cfg.target = kvtrim::budget::tokens(64);  // 64 tokens per KV head per layer on average
    cfg.window = w;
    cfg.prof = &prof;
    const kvtrim::method m = kvtrim::make_method(cfg, shape);
    auto seq = m.begin(n);

    long long kept = 0;
    for (int layer = 0; layer < shape.layers; ++layer) {
      // The engine's prefill buffers, here [token][kv_head][dim] as many engines lay them out.
      std::vector<float> k(size_t(n * shape.kv_heads * shape.head_dim));
      std::vector<float> v(k.size());
      std::vector<float> q(size_t(shape.q_heads * w * shape.head_dim));  // last w queries
      for (auto* buf : {&k, &v, &q})
        for (auto& x : *buf) x = gauss(rng);

      kvtrim::layer_kv<float> kv;
      kv.keys = kvtrim::view3<float>::token_major(k.data(), shape.kv_heads, n, shape.head_dim);
      kv.values = kvtrim::view3<float>::token_major(v.data(), shape.kv_heads, n, shape.head_dim);
      kv.queries = kvtrim::view3<const float>::head_major(q.data(), shape.q_heads, w, shape.head_dim);

      // Kept rows are now at the front of each head's rows, in prompt order; the engine keeps
      // rows [0, lengths[h]) of head h and frees the rest.
      const std::vector<kvtrim::index_t> lengths = seq->compress_layer(layer, kv);
      std::printf("%-10s layer %d keeps", name, layer);
      for (auto len : lengths) {
        std::printf(" %lld", static_cast<long long>(len));
        kept += len;
      }
      std::printf(" tokens per KV head\n");
    }
    const double full = double(n) * shape.layers * shape.kv_heads;
    std::printf("%-10s retained %.0f of %.0f KV bytes (%.2f%% of the full cache)\n", name,
                kvtrim::kv_bytes(double(kept), shape.head_dim, 4),
                kvtrim::kv_bytes(full, shape.head_dim, 4), 100.0 * double(kept) / full);
  }
  return 0;
}
