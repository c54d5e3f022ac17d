// The C++ side of test_oracle.py: runs one method through the library's runtime front on arrays
// Python wrote, and writes back what the library decided, so the binding can be compared with
// the C++ result on the same arrays.
//   oracle METHOD IN OUT [PROFILE]
// IN: int64 L, Hq, Hkv, D, n, w, B; then per layer float32 K [Hkv][n][D], V [Hkv][n][D], Q [Hq][w][D].
// OUT: per layer, per KV head: int64 count + the selected token indices (first select of the
// layer); then per layer int64 lengths [Hkv] after every layer (re-trims included) and the final
// float32 K and V.
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <vector>

#include "kvtrim/kvtrim.hpp"

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: oracle METHOD IN OUT [PROFILE]\n");
    return 2;
  }
  try {
    std::ifstream in(argv[2], std::ios::binary);
    std::int64_t h[7];
    in.read(reinterpret_cast<char*>(h), sizeof h);
    const int L = int(h[0]), Hq = int(h[1]), Hkv = int(h[2]), D = int(h[3]);
    const kvtrim::index_t n = h[4], w = h[5], B = h[6];
    std::vector<std::vector<float>> K(L), V(L), Q(L);
    for (int l = 0; l < L; ++l) {
      K[l].resize(size_t(Hkv * n * D));
      V[l].resize(K[l].size());
      Q[l].resize(size_t(Hq * w * D));
      in.read(reinterpret_cast<char*>(K[l].data()), std::streamsize(K[l].size() * 4));
      in.read(reinterpret_cast<char*>(V[l].data()), std::streamsize(V[l].size() * 4));
      in.read(reinterpret_cast<char*>(Q[l].data()), std::streamsize(Q[l].size() * 4));
    }
    if (!in) throw kvtrim::error("oracle: short input");
    kvtrim::profile prof;
    if (argc > 4) prof = kvtrim::load_profile(argv[4]);
    kvtrim::method_spec spec;
    spec.name = argv[1];
    spec.target = kvtrim::budget::tokens(B);
    spec.window = w;
    spec.prof = argc > 4 ? &prof : nullptr;
    const kvtrim::method m = kvtrim::make_method(spec, {L, Hq, Hkv, D, 0});
    auto seq = m.begin(n);
    auto kv_of = [&](int l) {
      kvtrim::layer_kv<float> kv;
      kv.keys = kvtrim::view3<float>::head_major(K[l].data(), Hkv, n, D);
      kv.values = kvtrim::view3<float>::head_major(V[l].data(), Hkv, n, D);
      kv.queries = kvtrim::view3<const float>::head_major(Q[l].data(), Hq, w, D);
      return kv;
    };
    std::ofstream out(argv[3], std::ios::binary);
    std::vector<std::vector<kvtrim::index_t>> lengths(static_cast<size_t>(L));
    for (int l = 0; l < L; ++l) {
      const kvtrim::selection sel = seq->select(l, seq->score(l, kv_of(l)));
      for (const auto& keep : sel.keep) {
        const std::int64_t c = std::int64_t(keep.size());
        out.write(reinterpret_cast<const char*>(&c), 8);
        out.write(reinterpret_cast<const char*>(keep.data()), std::streamsize(keep.size() * 8));
      }
      lengths[size_t(l)] = seq->evict(sel, kv_of(l));
      for (int r : seq->pending_retrims()) {
        kvtrim::layer_kv<float> kv = kv_of(r);
        lengths[size_t(r)] = seq->retrim(r, kv);
      }
    }
    for (int l = 0; l < L; ++l) {
      out.write(reinterpret_cast<const char*>(lengths[size_t(l)].data()), std::streamsize(Hkv * 8));
      out.write(reinterpret_cast<const char*>(K[l].data()), std::streamsize(K[l].size() * 4));
      out.write(reinterpret_cast<const char*>(V[l].data()), std::streamsize(V[l].size() * 4));
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
