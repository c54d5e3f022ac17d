// A downstream program built against an installed kvtrim (find_package): compresses one layer
// with SnapKV and CompressKV and checks the new lengths and the moved rows.
#include <cstdio>
#include <filesystem>
#include <vector>

#include <kvtrim/kvtrim.hpp>

int main() {
  const kvtrim::model_shape shape{2, 4, 2, 8, 0};
  const kvtrim::index_t n = 64, w = 8;
  kvtrim::profile prof;
  prof.model = "consumer";
  prof.layers = 2;
  prof.q_heads = 4;
  prof.kv_heads = 2;
  prof.semantic_retrieval = {{4, 3, 2, 1}, {1, 2, 3, 4}};
  prof.layer_error = {0.5, 0.5};
  int failures = 0;
  for (const char* name : {"snapkv", "compresskv"}) {
    std::vector<float> k(size_t(2 * n * 8)), v(k.size()), q(size_t(4 * w * 8), 0.1f);
    for (size_t i = 0; i < k.size(); ++i) {
      k[i] = float((i * 7919) % 97) / 97.0f;
      v[i] = float(i / 8 % n);  // row r of each head holds value r
    }
    kvtrim::method_spec cfg;
    cfg.name = name;
    cfg.target = kvtrim::budget::tokens(16);
    cfg.prof = &prof;
    auto seq = kvtrim::make_method(cfg, shape).begin(n);
    kvtrim::layer_kv<float> kv;
    kv.keys = kvtrim::view3<float>::head_major(k.data(), 2, n, 8);
    kv.values = kvtrim::view3<float>::head_major(v.data(), 2, n, 8);
    kv.queries = kvtrim::view3<const float>::head_major(q.data(), 4, w, 8);
    const auto len = seq->compress_layer(0, kv);
    const bool ok = len == std::vector<kvtrim::index_t>{16, 16} && v[size_t(15 * 8)] == float(n - 1);
    std::printf("consumer: %s keeps %lld + %lld rows: %s\n", name, static_cast<long long>(len[0]),
                static_cast<long long>(len[1]), ok ? "ok" : "WRONG");
    failures += ok ? 0 : 1;
  }
  const bool profiles = std::filesystem::exists(std::string(KVTRIM_PROFILE_DIR));
  std::printf("consumer: installed profile dir %s %s\n", KVTRIM_PROFILE_DIR, profiles ? "found" : "missing");
  return failures == 0 && profiles ? 0 : 1;
}
