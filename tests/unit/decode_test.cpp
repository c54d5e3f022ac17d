// Decode-time compression (decode/query_ring.hpp, decode/decode_compressor.hpp) on constructed
// inputs: the ring's order, which rows a head keeps, lengths at most the target after a step,
// per-layer targets, and refusals that leave the rows untouched.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "expect_error.hpp"
#include "kvtrim/kvtrim.hpp"

namespace {

using kvtrim::index_t;

// A host store with one allocation per (layer, KV head), each of its own length, as the
// reference host keeps them. Row t of a head: key (1, 1, ...) unless planted, value (t, t, ...), so
// the values say which original rows a head still holds.
struct head_store final : kvtrim::layer_store<float> {
  head_store(int layers, index_t n_heads, index_t head_dim)
      : dim(head_dim), k(size_t(layers * n_heads)), v(k.size()), heads(n_heads) {}
  void fill(int l, index_t h, index_t n) {
    auto& kk = at(k, l, h);
    auto& vv = at(v, l, h);
    kk.assign(size_t(n * dim), 1.f);
    vv.resize(size_t(n * dim));
    for (index_t t = 0; t < n; ++t)
      for (index_t d = 0; d < dim; ++d) vv[size_t(t * dim + d)] = float(t);  // value = original row
  }
  kvtrim::layer_kv<float> compacted(int l, index_t h) override {
    kvtrim::layer_kv<float> kv;
    auto& kk = at(k, l, h);
    const index_t n = index_t(kk.size()) / dim;
    kv.keys = kvtrim::view3<float>::head_major(kk.data(), 1, n, dim);
    kv.values = kvtrim::view3<float>::head_major(at(v, l, h).data(), 1, n, dim);
    kv.kv_head_offset = h;
    return kv;
  }
  void resized(int l, const std::vector<index_t>& lengths) override {
    ++resizes;
    for (index_t h = 0; h < heads; ++h) {
      at(k, l, h).resize(size_t(lengths[size_t(h)] * dim));
      at(v, l, h).resize(size_t(lengths[size_t(h)] * dim));
    }
  }
  std::vector<index_t> lengths(int l) {
    std::vector<index_t> out;
    for (index_t h = 0; h < heads; ++h) out.push_back(index_t(at(k, l, h).size()) / dim);
    return out;
  }
  // The original row index of each row a head holds (read back from its values).
  std::vector<index_t> rows(int l, index_t h) {
    std::vector<index_t> out;
    const auto& vv = at(v, l, h);
    for (size_t t = 0; t < vv.size(); t += size_t(dim)) out.push_back(index_t(vv[t]));
    return out;
  }
  std::vector<float>& at(std::vector<std::vector<float>>& x, int l, index_t h) { return x[size_t(l * heads + h)]; }
  index_t dim;
  std::vector<std::vector<float>> k, v;
  index_t heads;
  int resizes = 0;
};

kvtrim::method make(const std::string& name, const kvtrim::model_shape& s, index_t window,
                    kvtrim::param_values params = {}) {
  kvtrim::method_spec spec;
  spec.name = name;
  spec.window = window;
  spec.params = std::move(params);
  return kvtrim::make_method(spec, s);
}

TEST(QueryRing, HoldsTheLastWindowOldestFirst) {
  kvtrim::query_ring<float> ring(2, 2, 3, 2);  // 2 layers, 2 query heads, w = 3, dim 2
  auto step = [](float id) { return std::vector<float>{id, id + 0.5f, -id, -id - 0.5f}; };  // head 1 negated
  for (int s = 0; s < 2; ++s) ring.push(1, step(float(s)).data());
  EXPECT_EQ(ring.size(1), 2);
  EXPECT_FALSE(ring.full(1));
  EXPECT_EQ(ring.size(0), 0);  // layers are independent
  auto q = ring.queries(1);
  ASSERT_EQ(q.tokens(), 2);
  EXPECT_EQ(q(0, 0, 0), 0.f);
  EXPECT_EQ(q(0, 1, 0), 1.f);
  for (int s = 2; s < 7; ++s) ring.push(1, step(float(s)).data());  // wraps around twice
  q = ring.queries(1);
  ASSERT_EQ(q.tokens(), 3);
  EXPECT_TRUE(ring.full(1));
  for (index_t t = 0; t < 3; ++t) {
    EXPECT_EQ(q(0, t, 0), float(4 + t)) << t;  // steps 4, 5, 6: oldest first
    EXPECT_EQ(q(0, t, 1), float(4 + t) + 0.5f);
    EXPECT_EQ(q(1, t, 0), -float(4 + t));
  }
  // seed: the last w of a longer prefill window, in order, head-major with strides.
  std::vector<float> pre(size_t(2 * 5 * 2));
  for (index_t h = 0; h < 2; ++h)
    for (index_t t = 0; t < 5; ++t) pre[size_t((h * 5 + t) * 2)] = float(10 * h + t);
  ring.seed(0, kvtrim::view3<const float>::head_major(pre.data(), 2, 5, 2));
  q = ring.queries(0);
  ASSERT_EQ(q.tokens(), 3);
  EXPECT_EQ(q(0, 0, 0), 2.f);
  EXPECT_EQ(q(0, 2, 0), 4.f);
  EXPECT_EQ(q(1, 1, 0), 13.f);
  EXPECT_ERROR_HAS(ring.push(2, pre.data()), "layer 2 outside [0, 2)");
  EXPECT_ERROR_HAS(kvtrim::query_ring<float>(1, 1, 0, 4), "must all be >= 1");
}

// knorm keeps the smallest key norms: planted rows of each head are kept, plus the last w rows
// (the window: the newest decode tokens); a head at or under its target is not touched.
TEST(DecodeCompressor, KeepsTheScorersRowsAndTheWindowPerHead) {
  const kvtrim::model_shape s{1, 4, 2, 2, 0};  // G = 2, heads of their own length
  head_store st(1, 2, 2);
  st.fill(0, 0, 12);
  st.fill(0, 1, 5);
  for (index_t t : {2, 7, 9}) st.at(st.k, 0, 0)[size_t(t * 2)] = 0.01f;  // small norms in head 0
  const kvtrim::decode_compressor dc(make("knorm", s, 2), {5, 4});
  EXPECT_EQ(dc.target(0, 0), 5);
  EXPECT_EQ(dc.window(), 2);
  kvtrim::query_ring<float> ring(1, 4, 2, 2);
  const std::vector<float> q(8, 1.f);
  ring.push(0, q.data());
  ring.push(0, q.data());
  const std::vector<index_t> got = dc.compress_layer(0, st.lengths(0), ring.queries(0), st);
  EXPECT_EQ(got, (std::vector<index_t>{5, 5}));
  EXPECT_EQ(st.lengths(0), got);
  EXPECT_EQ(st.rows(0, 0), (std::vector<index_t>{2, 7, 9, 10, 11}));
  EXPECT_EQ(st.rows(0, 1), (std::vector<index_t>{0, 1, 2, 3, 4}));  // at its target: untouched
  EXPECT_EQ(st.resizes, 1);
}

// snapkv (no pooling) at decode: the key every ring query points at is kept.
TEST(DecodeCompressor, WindowScorerReadsTheRingsQueries) {
  const kvtrim::model_shape s{1, 2, 1, 2, 0};  // G = 2
  head_store st(1, 1, 2);
  st.fill(0, 0, 20);
  auto& k = st.at(st.k, 0, 0);
  for (index_t t = 0; t < 20; ++t) k[size_t(t * 2)] = 0.f, k[size_t(t * 2 + 1)] = 0.f;
  k[size_t(6 * 2)] = 8.f;  // token 6 along the queries' direction
  const kvtrim::decode_compressor dc(make("snapkv", s, 4, {{"pooling", "none"}}), {5, 8});
  kvtrim::query_ring<float> ring(1, 2, 4, 2);
  const std::vector<float> q{1.f, 0.f, 1.f, 0.f};
  for (int i = 0; i < 4; ++i) ring.push(0, q.data());
  dc.compress_layer(0, st.lengths(0), ring.queries(0), st);
  EXPECT_EQ(st.rows(0, 0), (std::vector<index_t>{6, 16, 17, 18, 19}));
}

// Every method that applies, on random rows of random per-head lengths: after a step no head is
// above its target, heads under it keep their rows, and due() follows the policy.
TEST(DecodeCompressor, LengthsNeverAboveTargetAfterAStep) {
  const kvtrim::model_shape s{4, 6, 3, 8, 0};
  std::mt19937 rng(7);
  int applied = 0;
  for (const auto& info : kvtrim::method_registry()) {
    if (!kvtrim::decode_refusal(info, false).empty()) continue;  // refused without building it
    const kvtrim::method m = make(info.name, s, 4);
    ++applied;
    const kvtrim::decode_compressor dc(m, {16, 8});
    head_store st(4, 3, 8);
    kvtrim::query_ring<float> ring(4, 6, 4, 8);
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    for (int l = 0; l < 4; ++l) {
      for (index_t h = 0; h < 3; ++h) {
        st.fill(l, h, index_t(5 + rng() % 60));
        for (float& x : st.at(st.k, l, h)) x = u(rng);
      }
      std::vector<float> q(6 * 8);
      for (int i = 0; i < 4; ++i) {
        for (float& x : q) x = u(rng);
        ring.push(l, q.data());
      }
      const std::vector<index_t> before = st.lengths(l);
      const std::vector<index_t> after = dc.compress_layer(l, before, ring.queries(l), st);
      for (index_t h = 0; h < 3; ++h) {
        const index_t t = dc.target(l, h);
        EXPECT_EQ(after[size_t(h)], std::min(before[size_t(h)], t)) << info.name << " layer " << l << " head " << h;
        EXPECT_EQ(st.lengths(l)[size_t(h)], after[size_t(h)]);
        EXPECT_FALSE(dc.due(l, 100, after)) << info.name;  // nothing over target: never due
      }
    }
  }
  EXPECT_EQ(applied, 9);  // snapkv, pyramidkv, adakv, streaming, random, knorm, keydiff, tova, chunkkv
}

TEST(DecodeCompressor, DueEveryIntervalOrPastTheBound) {
  const kvtrim::model_shape s{2, 2, 1, 4, 0};
  const kvtrim::decode_compressor dc(make("snapkv", s, 4), {16, 8});
  EXPECT_FALSE(dc.due(0, 7, {20}));  // over target, interval not reached, under target + interval
  EXPECT_TRUE(dc.due(0, 8, {20}));   // interval reached
  EXPECT_TRUE(dc.due(0, 1, {25}));   // past target + interval: at once
  EXPECT_FALSE(dc.due(0, 8, {16}));  // at target: nothing to do
}

// PyramidKV's decode targets: its pyramid over layers at B = target, non-increasing, average B.
TEST(DecodeCompressor, PyramidTargetsPerLayer) {
  const kvtrim::model_shape s{4, 2, 1, 4, 4096};
  const kvtrim::decode_compressor dc(make("pyramidkv", s, 4), {32, 8});
  index_t sum = 0;
  for (int l = 0; l < 4; ++l) {
    sum += dc.target(l, 0);
    if (l > 0) {
      EXPECT_LE(dc.target(l, 0), dc.target(l - 1, 0));
    }
  }
  EXPECT_GT(dc.target(0, 0), dc.target(3, 0));
  EXPECT_EQ(sum, 4 * 32);
}

// Refused methods throw kvtrim::error before anything is read; a bad step moves no row.
TEST(DecodeCompressor, RefusalsLeaveRowsUntouched) {
  const kvtrim::model_shape s{1, 4, 2, 2, 0};
  for (const char* name : {"full", "cake", "h2o", "expected_attention", "criticalkv"})
    EXPECT_ERROR_HAS(kvtrim::decode_compressor(make(name, s, 2), {8, 4}), std::string("method '") + name + "'");
  kvtrim::method_spec rr;
  rr.name = "snapkv";
  rr.rerotate_keys = true;
  EXPECT_ERROR_HAS(kvtrim::decode_compressor(kvtrim::make_method(rr, s), {8, 4}), "rerotate_keys");
  EXPECT_ERROR_HAS(kvtrim::decode_compressor(make("snapkv", s, 8), {4, 4}), "target 4 must be >= the method's window 8");
  EXPECT_ERROR_HAS(kvtrim::decode_compressor(make("snapkv", s, 2), {8, 0}), "interval 0 must be >= 1");

  head_store st(1, 2, 2);
  st.fill(0, 0, 12);
  st.fill(0, 1, 30);
  const auto k0 = st.k, v0 = st.v;
  const kvtrim::decode_compressor dc(make("knorm", s, 2), {5, 4});
  kvtrim::query_ring<float> ring(1, 4, 2, 2);
  const std::vector<float> q(8, 1.f);
  ring.push(0, q.data());  // one step: the ring is not full
  EXPECT_ERROR_HAS(dc.compress_layer(0, st.lengths(0), ring.queries(0), st), "the ring must hold window() steps");
  ring.push(0, q.data());
  std::vector<index_t> wrong = st.lengths(0);
  wrong[1] = 40;  // more rows than the store holds for head 1: refused before head 0 moves
  EXPECT_ERROR_HAS(dc.compress_layer(0, wrong, ring.queries(0), st), "holds 30 rows, the head has 40");
  EXPECT_EQ(st.k, k0);
  EXPECT_EQ(st.v, v0);
  EXPECT_EQ(st.resizes, 0);
}

}  // namespace
