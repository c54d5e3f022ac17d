// The composition layer: named methods end to end on constructed views, the split
// score -> reduce -> select -> evict step (tensor-parallel ranks), batches, `full` as identity,
// CAKE's cascade re-trims, and the runtime front's bad-input errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

#include "kvtrim/kvtrim.hpp"

namespace {

using kvtrim::index_t;

struct layer_buffers {
  index_t kv_heads, q_heads, n, w, d;
  std::vector<float> k, v, q;
  // The optional inputs of criticalkv, h2o and expected_attention (W_o with 3 outputs, attention
  // column sums, pre-RoPE queries); the other methods never read them.
  std::vector<float> wo, sums, pq;
  layer_buffers(index_t kvh, index_t qh, index_t n_, index_t w_, index_t d_, unsigned seed)
      : kv_heads(kvh), q_heads(qh), n(n_), w(w_), d(d_), k(size_t(kvh * n_ * d_)),
        v(size_t(kvh * n_ * d_)), q(size_t(qh * w_ * d_)), wo(size_t(qh * 3 * d_)),
        sums(size_t(qh * n_)), pq(size_t(qh * n_ * d_)) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> g(0.f, 1.f);
    for (auto& x : k) x = g(rng);
    for (auto& x : q) x = g(rng);
    for (auto& x : wo) x = g(rng);
    for (auto& x : sums) x = std::abs(g(rng));
    for (auto& x : pq) x = g(rng);
    // V rows carry their (head, token) identity so moved rows can be recognised.
    for (index_t h = 0; h < kvh; ++h)
      for (index_t t = 0; t < n_; ++t)
        for (index_t j = 0; j < d_; ++j) v[size_t((h * n_ + t) * d_ + j)] = float(h * 100000 + t);
  }
  kvtrim::layer_kv<float> views(index_t head_begin = 0, index_t heads = -1) {
    if (heads < 0) heads = kv_heads;
    const index_t g = q_heads / kv_heads;
    kvtrim::layer_kv<float> kv;
    kv.keys = kvtrim::view3<float>::head_major(k.data(), kv_heads, n, d).head_range(head_begin, heads);
    kv.values = kvtrim::view3<float>::head_major(v.data(), kv_heads, n, d).head_range(head_begin, heads);
    kv.queries = kvtrim::view3<const float>::head_major(q.data(), q_heads, w, d)
                     .head_range(head_begin * g, heads * g);
    kv.out_proj = kvtrim::view3<const float>::head_major(wo.data(), q_heads, 3, d).head_range(head_begin * g, heads * g);
    kv.attention_sums =
        kvtrim::view3<const float>::head_major(sums.data(), q_heads, n, 1).head_range(head_begin * g, heads * g);
    kv.prompt_queries =
        kvtrim::view3<const float>::head_major(pq.data(), q_heads, n, d).head_range(head_begin * g, heads * g);
    kv.rope.base = 10000.0;
    kv.kv_head_offset = head_begin;
    return kv;
  }
  // The original token index held by row t of head h (read back from V).
  index_t token_at(index_t h, index_t t) const {
    return index_t(v[size_t((h * n + t) * d)]) - h * 100000;
  }
};

// The host side of CAKE's re-trims: every layer's buffers, and the lengths kvtrim reports.
struct buffers_store final : kvtrim::layer_store<float> {
  std::vector<layer_buffers>& layers;
  std::vector<std::vector<index_t>> lengths;
  explicit buffers_store(std::vector<layer_buffers>& l) : layers(l), lengths(l.size()) {}
  kvtrim::layer_kv<float> compacted(int layer, index_t kv_head) override {
    kvtrim::layer_kv<float> kv = layers[size_t(layer)].views(kv_head, 1);  // one head per call
    kv.queries = {};
    return kv;
  }
  void resized(int layer, const std::vector<index_t>& len) override { lengths[size_t(layer)] = len; }
};

kvtrim::profile test_profile(const kvtrim::model_shape& s) {
  kvtrim::profile p;
  p.model = "test";
  p.layers = s.layers;
  p.q_heads = s.q_heads;
  p.kv_heads = s.kv_heads;
  for (int l = 0; l < s.layers; ++l) {
    std::vector<double> srh(size_t(s.q_heads)), rr(size_t(s.q_heads));
    for (int h = 0; h < s.q_heads; ++h) {
      srh[size_t(h)] = double((h * 7 + l * 3) % s.q_heads);
      rr[size_t(h)] = double((h * 5 + l) % s.q_heads) / s.q_heads;
    }
    p.semantic_retrieval.push_back(srh);
    p.retrieval_reasoning.push_back(rr);
    p.layer_error.push_back(1.0 + l);
  }
  double sum = std::accumulate(p.layer_error.begin(), p.layer_error.end(), 0.0);
  for (auto& e : p.layer_error) e /= sum;
  return p;
}

const kvtrim::model_shape kShape{4, 8, 4, 16, 4096};

TEST(Method, EveryNamedMethodKeepsItsBudgetAndTheWindowInOrder) {
  const kvtrim::profile prof = test_profile(kShape);
  for (const std::string& name : kvtrim::method_names()) {
    kvtrim::method_spec cfg;
    cfg.name = name;
    cfg.target = kvtrim::budget::tokens(48);
    cfg.prof = &prof;
    const kvtrim::method m = kvtrim::make_method(cfg, kShape);
    const index_t n = 300;
    auto seq = m.begin(n);
    index_t kept = 0;
    std::vector<layer_buffers> all;
    for (int l = 0; l < kShape.layers; ++l) all.emplace_back(4, 8, n, 8, 16, 100u + unsigned(l));
    buffers_store store(all);
    for (int l = 0; l < kShape.layers; ++l) {
      layer_buffers& buf = all[size_t(l)];
      const auto lengths = seq->compress_layer(l, buf.views(), store);
      ASSERT_EQ(lengths.size(), 4u) << name;
      for (index_t h = 0; h < 4; ++h) {
        const index_t len = lengths[size_t(h)];
        ASSERT_GE(len, 8) << name;
        ASSERT_LE(len, n) << name;
        for (index_t t = 1; t < len; ++t) ASSERT_LT(buf.token_at(h, t - 1), buf.token_at(h, t)) << name;
        for (index_t i = 0; i < 8; ++i) ASSERT_EQ(buf.token_at(h, len - 8 + i), n - 8 + i) << name;
        kept += len;
      }
      EXPECT_TRUE(seq->pending_retrims().empty()) << name << ": the store served every re-trim";
    }
    if (name == "full") {
      EXPECT_EQ(kept, kShape.layers * 4 * n);
    } else if (name != "cake") {
      EXPECT_EQ(kept, kShape.layers * 4 * 48) << name << ": equal bytes at equal B";
    }
  }
}

// method_spec::rerotate_keys on every method (CAKE's re-trims included): the same rows are kept
// as without it, values bit for bit, and each kept key is the plain run's key rotated by RoPE
// from its token's position to its row's, n - len + row (layer_buffers' keys stand for post-RoPE
// keys, base 10000, halves).
TEST(Method, EveryNamedMethodRerotatesTheKeysItKeeps) {
  const kvtrim::profile prof = test_profile(kShape);
  const auto rotated = [](const float* x, index_t d, index_t delta, index_t j) {
    const index_t i = j % (d / 2), a = i, b = i + d / 2;
    const double ang = double(delta) * std::pow(10000.0, -2.0 * double(i) / double(d));
    return j < d / 2 ? float(x[a] * std::cos(ang) - x[b] * std::sin(ang))
                     : float(x[a] * std::sin(ang) + x[b] * std::cos(ang));
  };
  for (const std::string& name : kvtrim::method_names()) {
    const index_t n = 300;
    std::vector<std::vector<layer_buffers>> runs(2);
    std::vector<std::vector<std::vector<index_t>>> lengths(2);
    for (int r = 0; r < 2; ++r) {
      kvtrim::method_spec cfg;
      cfg.name = name;
      cfg.target = kvtrim::budget::tokens(48);
      cfg.prof = &prof;
      cfg.rerotate_keys = r == 1;
      auto seq = kvtrim::make_method(cfg, kShape).begin(n);
      for (int l = 0; l < kShape.layers; ++l) runs[size_t(r)].emplace_back(4, 8, n, 8, 16, 300u + unsigned(l));
      buffers_store store(runs[size_t(r)]);
      for (int l = 0; l < kShape.layers; ++l)
        lengths[size_t(r)].push_back(seq->compress_layer(l, runs[size_t(r)][size_t(l)].views(), store));
      for (int l = 0; l < kShape.layers; ++l)
        if (!store.lengths[size_t(l)].empty()) lengths[size_t(r)][size_t(l)] = store.lengths[size_t(l)];
    }
    ASSERT_EQ(lengths[0], lengths[1]) << name;
    index_t moved = 0;
    for (int l = 0; l < kShape.layers; ++l) {
      const layer_buffers &plain = runs[0][size_t(l)], &rr = runs[1][size_t(l)];
      for (index_t h = 0; h < 4; ++h)
        for (index_t t = 0, len = lengths[0][size_t(l)][size_t(h)]; t < len; ++t) {
          const index_t tok = plain.token_at(h, t), pos = n - len + t;  // packed up to the prompt's end
          ASSERT_EQ(rr.token_at(h, t), tok) << name;
          moved += tok != pos;
          const float* k0 = plain.k.data() + (h * n + t) * 16;
          for (index_t j = 0; j < 16; ++j)
            ASSERT_NEAR(rr.k[size_t((h * n + t) * 16 + j)], rotated(k0, 16, pos - tok, j), 2e-5f)
                << name << " layer " << l << " head " << h << " row " << t << " dim " << j;
        }
    }
    if (name != "full") {
      EXPECT_GT(moved, 0) << name;
    }
  }
}

TEST(Method, FullLeavesMemoryUntouched) {
  kvtrim::method_spec cfg;
  cfg.name = "full";
  const kvtrim::method m = kvtrim::make_method(cfg, kShape);
  layer_buffers buf(4, 8, 100, 8, 16, 7);
  const auto k0 = buf.k, v0 = buf.v;
  auto seq = m.begin(100);
  const auto lengths = seq->compress_layer(0, buf.views());
  EXPECT_EQ(lengths, std::vector<index_t>(4, 100));
  EXPECT_EQ(buf.k, k0);
  EXPECT_EQ(buf.v, v0);
}

TEST(Method, BudgetAtLeastThePromptKeepsEverything) {
  const kvtrim::profile prof = test_profile(kShape);
  for (const std::string name : {"snapkv", "pyramidkv", "compresskv", "headkv", "adakv"}) {
    kvtrim::method_spec cfg;
    cfg.name = name;
    cfg.prof = &prof;
    cfg.target = kvtrim::budget::tokens(1000);
    auto seq = kvtrim::make_method(cfg, kShape).begin(200);
    layer_buffers buf(4, 8, 200, 8, 16, 3);
    const auto v0 = buf.v;
    EXPECT_EQ(seq->compress_layer(1, buf.views()), std::vector<index_t>(4, 200)) << name;
    EXPECT_EQ(buf.v, v0) << name;
  }
}

TEST(Method, RejectsBadConfiguration) {
  kvtrim::method_spec cfg;
  cfg.name = "nope";
  EXPECT_THROW(kvtrim::make_method(cfg, kShape), kvtrim::error);
  cfg.name = "compresskv";  // no profile
  EXPECT_THROW(kvtrim::make_method(cfg, kShape), kvtrim::error);
  kvtrim::model_shape other = kShape;
  other.layers = 5;
  const kvtrim::profile prof = test_profile(other);
  cfg.prof = &prof;  // profile of another model
  EXPECT_THROW(kvtrim::make_method(cfg, kShape), kvtrim::error);
  cfg.name = "snapkv";
  cfg.params = {{"kernel", "4"}};
  EXPECT_THROW(kvtrim::make_method(cfg, kShape), kvtrim::error);
  EXPECT_THROW(kvtrim::budget::tokens(0), kvtrim::error);
  EXPECT_THROW(kvtrim::budget::ratio(1.5), kvtrim::error);
  EXPECT_THROW(kvtrim::budget::ratio(0.0), kvtrim::error);
}

TEST(Method, RejectsBadPromptsBeforeTouchingMemory) {
  kvtrim::method_spec cfg;
  const kvtrim::method m = kvtrim::make_method(cfg, kShape);
  EXPECT_THROW(m.begin(0), kvtrim::error);     // empty prompt
  EXPECT_THROW(m.begin(5000), kvtrim::error);  // longer than the context
  EXPECT_THROW(m.begin(4), kvtrim::error);     // window larger than the prompt
  auto seq = m.begin(100);
  layer_buffers buf(4, 8, 120, 8, 16, 1);
  const auto v0 = buf.v;
  EXPECT_THROW(seq->compress_layer(0, buf.views()), kvtrim::error);  // 120 tokens, plan for 100
  auto kv = buf.views();
  kv.length = 100;
  kv.values = kvtrim::view3<float>::head_major(buf.v.data(), 4, 120, 8);  // dim disagrees
  EXPECT_THROW(seq->compress_layer(0, kv), kvtrim::error);
  EXPECT_THROW(seq->compress_layer(9, buf.views()), kvtrim::error);  // layer out of range
  EXPECT_EQ(buf.v, v0);
}

// Two tensor-parallel "ranks" holding half the KV heads each reach the decision of one rank
// holding all, after an all-reduce (addition) of the shared per-layer scores.
TEST(Method, TensorParallelRanksAgreeWithOneRank) {
  const kvtrim::profile prof = test_profile(kShape);
  for (const std::string name : {"compresskv", "snapkv", "streaming", "random"}) {
    kvtrim::method_spec cfg;
    cfg.name = name;
    cfg.prof = &prof;
    cfg.target = kvtrim::budget::tokens(40);
    const kvtrim::method m = kvtrim::make_method(cfg, kShape);
    const index_t n = 257;
    for (int layer = 0; layer < kShape.layers; ++layer) {
      layer_buffers one(4, 8, n, 8, 16, 11u + unsigned(layer));
      layer_buffers ranks = one;
      auto s_all = m.begin(n);
      const auto sel_all = s_all->select(layer, s_all->score(layer, one.views()));
      auto r0 = m.begin(n), r1 = m.begin(n);
      auto kv0 = ranks.views(0, 2), kv1 = ranks.views(2, 2);
      kvtrim::token_scores p0 = r0->score(layer, kv0), p1 = r1->score(layer, kv1);
      if (p0.shared) {  // all-reduce of the shared row
        kvtrim::token_scores sum0 = p0, sum1 = p1;
        sum0.accumulate(p1);
        sum1.accumulate(p0);
        p0 = sum0;
        p1 = sum1;
      }
      const auto sel0 = r0->select(layer, p0), sel1 = r1->select(layer, p1);
      ASSERT_EQ(sel0.keep.size(), 2u);
      EXPECT_EQ(sel0.keep[0], sel_all.keep[0]) << name << " layer " << layer;
      EXPECT_EQ(sel0.keep[1], sel_all.keep[1]) << name << " layer " << layer;
      EXPECT_EQ(sel1.keep[0], sel_all.keep[2]) << name << " layer " << layer;
      EXPECT_EQ(sel1.keep[1], sel_all.keep[3]) << name << " layer " << layer;
      r0->evict(sel0, kv0);
      r1->evict(sel1, kv1);
      s_all->evict(sel_all, one.views());
      EXPECT_EQ(one.v, ranks.v);
    }
  }
}

// A padded batch: each sequence compressed as if alone; padding never kept.
TEST(Batch, SequencesOfDifferentLengthsMatchSeparateRuns) {
  const index_t kvh = 4, qh = 8, w = 8, d = 16, cap = 200;
  const std::vector<index_t> lengths = {200, 120, 57};
  std::vector<layer_buffers> alone;
  std::vector<float> bk, bv, bq;
  for (size_t s = 0; s < lengths.size(); ++s) {
    layer_buffers one(kvh, qh, lengths[s], w, d, 40u + unsigned(s));
    layer_buffers padded(kvh, qh, cap, w, d, 999);
    for (index_t h = 0; h < kvh; ++h)
      for (index_t t = 0; t < lengths[s]; ++t)
        for (index_t j = 0; j < d; ++j) {
          padded.k[size_t((h * cap + t) * d + j)] = one.k[size_t((h * lengths[s] + t) * d + j)];
          padded.v[size_t((h * cap + t) * d + j)] = one.v[size_t((h * lengths[s] + t) * d + j)];
        }
    padded.q = one.q;
    bk.insert(bk.end(), padded.k.begin(), padded.k.end());
    bv.insert(bv.end(), padded.v.begin(), padded.v.end());
    bq.insert(bq.end(), padded.q.begin(), padded.q.end());
    alone.push_back(one);
  }
  using C = kvtrim::compressor<kvtrim::all_heads, kvtrim::window_attention, kvtrim::uniform>;
  const C c(kShape, kvtrim::compress_options{kvtrim::budget::tokens(32), w});
  kvtrim::batch_layer_kv<float> batch;
  batch.keys = kvtrim::view3<float>::head_major(bk.data(), kvh, cap, d);
  batch.values = kvtrim::view3<float>::head_major(bv.data(), kvh, cap, d);
  batch.queries = kvtrim::view3<const float>::head_major(bq.data(), qh, w, d);
  batch.kv_stride_seq = kvh * cap * d;
  batch.q_stride_seq = qh * w * d;
  batch.lengths = lengths;
  std::vector<C::plan> plans;
  for (index_t n : lengths) plans.push_back(c.begin(n));
  const auto got = kvtrim::compress_batch(c, plans, 2, batch);
  for (size_t s = 0; s < lengths.size(); ++s) {
    auto p = c.begin(lengths[s]);
    const auto want = c.compress_layer(p, 2, alone[s].views());
    EXPECT_EQ(got[s], want);
    for (index_t h = 0; h < kvh; ++h)
      for (index_t t = 0; t < want[size_t(h)]; ++t)
        EXPECT_EQ(bv[size_t(s) * size_t(kvh * cap * d) + size_t((h * cap + t) * d)],
                  alone[s].v[size_t((h * lengths[s] + t) * d)]);
  }
}

// CAKE: as later layers arrive, earlier layers' budgets shrink; re-trimming keeps the running
// total within L x B per head at every stage (CAKE's cascade: the first layer may hold up to
// L x (B - w) candidates until later layers arrive) and ends at exactly L x B.
TEST(CakeCascade, RetrimsKeepTheRunningTotalWithinBudget) {
  kvtrim::method_spec cfg;
  cfg.name = "cake";
  cfg.target = kvtrim::budget::tokens(40);
  const kvtrim::method m = kvtrim::make_method(cfg, kShape);
  const index_t n = 300;
  auto seq = m.begin(n);
  std::vector<layer_buffers> layers;
  for (int l = 0; l < kShape.layers; ++l) layers.emplace_back(4, 8, n, 8, 16, 70u + unsigned(l) * 13);
  std::vector<std::vector<index_t>> len(size_t(kShape.layers));
  for (int l = 0; l < kShape.layers; ++l) {
    auto kv_l = layers[size_t(l)].views();  // the split step, as a tensor-parallel engine runs it
    len[size_t(l)] = seq->evict(seq->select(l, seq->score(l, kv_l)), kv_l);
    for (int r : seq->pending_retrims()) {
      auto kv = layers[size_t(r)].views();
      const auto before = len[size_t(r)];
      len[size_t(r)] = seq->retrim(r, kv);
      for (index_t h = 0; h < 4; ++h) {
        EXPECT_LE(len[size_t(r)][size_t(h)], before[size_t(h)]);
        const index_t L = len[size_t(r)][size_t(h)];
        for (index_t i = 0; i < 8; ++i) EXPECT_EQ(layers[size_t(r)].token_at(h, L - 8 + i), n - 8 + i);
        for (index_t t = 1; t < L; ++t)
          EXPECT_LT(layers[size_t(r)].token_at(h, t - 1), layers[size_t(r)].token_at(h, t));
      }
    }
    EXPECT_TRUE(seq->pending_retrims().empty());
    index_t total = 0;
    for (int j = 0; j <= l; ++j) total += len[size_t(j)][0];
    EXPECT_LE(total, kShape.layers * 40) << "after layer " << l;
  }
  index_t total = 0;
  for (const auto& x : len) total += std::accumulate(x.begin(), x.end(), index_t{0});
  EXPECT_EQ(total, kShape.layers * 4 * 40);
}

// compress_layer is the whole contract: with a layer_store, CAKE re-trims through it and ends at
// exactly L x H x B; without one it refuses instead of leaving earlier layers over budget.
TEST(CakeCascade, CompressLayerRetrimsThroughTheStoreOrRefuses) {
  kvtrim::method_spec cfg;
  cfg.name = "cake";
  cfg.target = kvtrim::budget::tokens(40);
  const kvtrim::method m = kvtrim::make_method(cfg, kShape);
  EXPECT_TRUE(m.cascades());
  const index_t n = 300;
  std::vector<layer_buffers> layers;
  for (int l = 0; l < kShape.layers; ++l) layers.emplace_back(4, 8, n, 8, 16, 70u + unsigned(l) * 13);
  const std::vector<layer_buffers> original = layers;
  auto refused = m.begin(n);
  EXPECT_THROW(refused->compress_layer(0, layers[0].views()), kvtrim::error);
  EXPECT_EQ(layers[0].v, original[0].v) << "refused before touching memory";
  buffers_store store(layers);
  auto seq = m.begin(n);
  for (int l = 0; l < kShape.layers; ++l) {
    store.lengths[size_t(l)] = seq->compress_layer(l, layers[size_t(l)].views(), store);
    index_t total = 0;
    for (int j = 0; j <= l; ++j) total += store.lengths[size_t(j)][0];
    EXPECT_LE(total, kShape.layers * 40) << "after layer " << l;
    for (int j = 0; j <= l; ++j)
      for (index_t h = 0; h < 4; ++h) {
        const index_t L = store.lengths[size_t(j)][size_t(h)];
        for (index_t i = 0; i < 8; ++i) EXPECT_EQ(layers[size_t(j)].token_at(h, L - 8 + i), n - 8 + i);
        for (index_t t = 1; t < L; ++t)
          EXPECT_LT(layers[size_t(j)].token_at(h, t - 1), layers[size_t(j)].token_at(h, t));
      }
  }
  index_t total = 0;
  for (const auto& x : store.lengths) total += std::accumulate(x.begin(), x.end(), index_t{0});
  EXPECT_EQ(total, kShape.layers * 4 * 40);
}

// The runtime front drives a padded batch too, CAKE included (one store per sequence).
TEST(Batch, RuntimeMethodMatchesSeparateRuns) {
  const index_t kvh = 4, qh = 8, w = 8, d = 16, cap = 160;
  const std::vector<index_t> lengths = {160, 97};
  for (const std::string name : {"snapkv", "cake"}) {
    kvtrim::method_spec cfg;
    cfg.name = name;
    cfg.target = kvtrim::budget::tokens(24);
    const kvtrim::method m = kvtrim::make_method(cfg, kShape);
    std::vector<std::vector<layer_buffers>> alone(lengths.size()), padded(lengths.size());
    std::vector<std::unique_ptr<kvtrim::sequence_compressor>> seqs, refs;
    std::vector<std::unique_ptr<buffers_store>> stores, ref_stores;
    std::vector<kvtrim::layer_store<float>*> store_ptrs;
    for (size_t s = 0; s < lengths.size(); ++s) {
      for (int l = 0; l < kShape.layers; ++l) {
        alone[s].emplace_back(kvh, qh, lengths[s], w, d, 300u + unsigned(s * 10 + size_t(l)));
        layer_buffers p(kvh, qh, cap, w, d, 1);
        for (index_t h = 0; h < kvh; ++h)
          for (index_t t = 0; t < lengths[s]; ++t)
            for (index_t j = 0; j < d; ++j) {
              p.k[size_t((h * cap + t) * d + j)] = alone[s].back().k[size_t((h * lengths[s] + t) * d + j)];
              p.v[size_t((h * cap + t) * d + j)] = alone[s].back().v[size_t((h * lengths[s] + t) * d + j)];
            }
        p.q = alone[s].back().q;
        padded[s].push_back(p);
      }
      seqs.push_back(m.begin(lengths[s]));
      refs.push_back(m.begin(lengths[s]));
      stores.push_back(std::make_unique<buffers_store>(padded[s]));
      ref_stores.push_back(std::make_unique<buffers_store>(alone[s]));
      store_ptrs.push_back(stores.back().get());
    }
    for (int l = 0; l < kShape.layers; ++l) {
      std::vector<float> bk, bv, bq;
      for (size_t s = 0; s < lengths.size(); ++s) {
        const layer_buffers& p = padded[s][size_t(l)];
        bk.insert(bk.end(), p.k.begin(), p.k.end());
        bv.insert(bv.end(), p.v.begin(), p.v.end());
        bq.insert(bq.end(), p.q.begin(), p.q.end());
      }
      kvtrim::batch_layer_kv<float> batch;
      batch.keys = kvtrim::view3<float>::head_major(bk.data(), kvh, cap, d);
      batch.values = kvtrim::view3<float>::head_major(bv.data(), kvh, cap, d);
      batch.queries = kvtrim::view3<const float>::head_major(bq.data(), qh, w, d);
      batch.kv_stride_seq = kvh * cap * d;
      batch.q_stride_seq = qh * w * d;
      batch.lengths = lengths;
      // The batch compacts its own copy; copy it back into each sequence's padded layer buffers
      // so the stores re-trim what was compacted.
      const auto got = kvtrim::compress_batch(seqs, l, batch,
                                              name == "cake" ? store_ptrs
                                                             : std::vector<kvtrim::layer_store<float>*>{});
      for (size_t s = 0; s < lengths.size(); ++s) {
        std::copy_n(bv.begin() + std::ptrdiff_t(s) * kvh * cap * d, kvh * cap * d, padded[s][size_t(l)].v.begin());
        std::copy_n(bk.begin() + std::ptrdiff_t(s) * kvh * cap * d, kvh * cap * d, padded[s][size_t(l)].k.begin());
        stores[s]->lengths[size_t(l)] = got[s];
        const auto want = refs[s]->compress_layer(l, alone[s][size_t(l)].views(), *ref_stores[s]);
        ref_stores[s]->lengths[size_t(l)] = want;
        EXPECT_EQ(got[s], want) << name << " sequence " << s << " layer " << l;
      }
    }
    for (size_t s = 0; s < lengths.size(); ++s)
      for (int l = 0; l < kShape.layers; ++l) {
        EXPECT_EQ(stores[s]->lengths[size_t(l)], ref_stores[s]->lengths[size_t(l)]) << name;
        for (index_t h = 0; h < kvh; ++h)
          for (index_t t = 0; t < stores[s]->lengths[size_t(l)][size_t(h)]; ++t)
            EXPECT_EQ(padded[s][size_t(l)].v[size_t((h * cap + t) * d)],
                      alone[s][size_t(l)].v[size_t((h * lengths[s] + t) * d)]) << name;
      }
  }
}

TEST(Method, HalfAndBf16ViewsCompressLikeFloat) {
  kvtrim::method_spec cfg;
  cfg.name = "snapkv";
  cfg.target = kvtrim::budget::tokens(24);
  const kvtrim::method m = kvtrim::make_method(cfg, kShape);
  layer_buffers buf(4, 8, 128, 8, 16, 5);
  std::vector<kvtrim::bfloat16> kb(buf.k.size()), vb(buf.v.size()), qb(buf.q.size());
  for (size_t i = 0; i < kb.size(); ++i) kb[i] = kvtrim::from_float<kvtrim::bfloat16>(buf.k[i]);
  for (size_t i = 0; i < vb.size(); ++i) vb[i] = kvtrim::from_float<kvtrim::bfloat16>(float(i % 251));
  for (size_t i = 0; i < qb.size(); ++i) qb[i] = kvtrim::from_float<kvtrim::bfloat16>(buf.q[i]);
  kvtrim::layer_kv<kvtrim::bfloat16> kv;
  kv.keys = kvtrim::view3<kvtrim::bfloat16>::head_major(kb.data(), 4, 128, 16);
  kv.values = kvtrim::view3<kvtrim::bfloat16>::head_major(vb.data(), 4, 128, 16);
  kv.queries = kvtrim::view3<const kvtrim::bfloat16>::head_major(qb.data(), 8, 8, 16);
  auto seq = m.begin(128);
  EXPECT_EQ(seq->compress_layer(0, kv), std::vector<index_t>(4, 24));
}

}  // namespace

namespace {

// Each window-scoring method pools as the code it reproduces (registry.hpp, params::pooling):
// CompressKV's and CAKE's releases avg 5, the KVCache-Factory / HeadKV lineage max 7.
TEST(Registry, PoolingDefaultsFollowEachMethodsOwnCode) {
  auto def = [](const char* m, const char* key) { return kvtrim::find_method(m).param(key)->default_value; };
  for (const char* m : {"compresskv", "compresskv-uniform", "compresskv-chunk", "cake"}) {
    EXPECT_EQ(def(m, "pooling"), "avg") << m;
    EXPECT_EQ(def(m, "kernel"), "5") << m;
  }
  for (const char* m : {"snapkv", "pyramidkv", "adakv", "headkv", "adakv-compresskv", "chunkkv"}) {
    EXPECT_EQ(def(m, "pooling"), "max") << m;
    EXPECT_EQ(def(m, "kernel"), "7") << m;
  }
}

}  // namespace
