// The conformance suite: every registered method (and so every scorer, allocator and the two
// executors they run with) passes the same checks, parameterised over the registry, so a new
// method is tested by being registered. Per method, element type and layout:
//   exact totals (L x H x B at equal B; everything with full or B >= n), the window kept, kept
//   rows in prompt order and equal to a gather by index, nothing written past the new lengths,
//   the same choice for head-major and token-major layouts, copy_to agreeing with in-place
//   compaction, every parameter's default valid, and bad input rejected with memory untouched.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kvtrim/kvtrim.hpp"

namespace {

using kvtrim::index_t;

const kvtrim::model_shape kShape{3, 6, 2, 8, 4096};  // G = 3
constexpr index_t kN = 300, kW = 8, kB = 40;

kvtrim::profile synthetic_profile() {
  kvtrim::profile p;
  p.model = "conformance";
  p.layers = kShape.layers;
  p.q_heads = kShape.q_heads;
  p.kv_heads = kShape.kv_heads;
  for (int l = 0; l < kShape.layers; ++l) {
    std::vector<double> s(size_t(kShape.q_heads));
    for (int h = 0; h < kShape.q_heads; ++h) s[size_t(h)] = double((h * 5 + l) % kShape.q_heads) + 0.5;
    p.semantic_retrieval.push_back(s);
    p.retrieval_reasoning.push_back(s);
    p.layer_error.push_back(double(l + 1) / 6.0);
  }
  return p;
}

// One layer in memory of element type T, either layout. V row t of head h holds (h, t % 64,
// t / 64) in its first three entries: small integers, exact even in bfloat16, so every moved row
// can be recognised.
template <class T>
struct layer {
  bool token_major;
  std::vector<T> k, v, q;
  // The optional inputs some methods read (layer_kv.hpp): W_o, attention column sums, pre-RoPE
  // prompt queries; every method gets them, the others never look.
  static constexpr index_t kHidden = 5;
  std::vector<T> wo, pq;
  std::vector<float> sums;
  layer(unsigned seed, bool tm) : token_major(tm), k(size_t(kShape.kv_heads * kN * kShape.head_dim)),
                                  v(k.size()), q(size_t(kShape.q_heads * kW * kShape.head_dim)),
                                  wo(size_t(kShape.q_heads * kHidden * kShape.head_dim)),
                                  pq(size_t(kShape.q_heads * kN * kShape.head_dim)),
                                  sums(size_t(kShape.q_heads * kN)) {
    std::mt19937 g(seed);
    std::normal_distribution<float> nd(0.f, 1.f);
    for (auto& x : q) x = kvtrim::from_float<T>(nd(g));
    for (auto& x : wo) x = kvtrim::from_float<T>(nd(g));
    for (auto& x : pq) x = kvtrim::from_float<T>(nd(g));
    for (auto& x : sums) x = std::abs(nd(g));
    auto kv = views();
    for (index_t h = 0; h < kShape.kv_heads; ++h)  // in logical order: the same K in both layouts
      for (index_t t = 0; t < kN; ++t)
        for (index_t j = 0; j < kShape.head_dim; ++j) kv.keys(h, t, j) = kvtrim::from_float<T>(nd(g));
    for (index_t h = 0; h < kShape.kv_heads; ++h)
      for (index_t t = 0; t < kN; ++t) {
        for (index_t j = 0; j < kShape.head_dim; ++j) kv.values(h, t, j) = kvtrim::from_float<T>(0.f);
        kv.values(h, t, 0) = kvtrim::from_float<T>(float(h));
        kv.values(h, t, 1) = kvtrim::from_float<T>(float(t % 64));
        kv.values(h, t, 2) = kvtrim::from_float<T>(float(t / 64));
      }
  }
  kvtrim::layer_kv<T> views() {
    kvtrim::layer_kv<T> kv;
    const index_t H = kShape.kv_heads, d = kShape.head_dim;
    kv.keys = token_major ? kvtrim::view3<T>::token_major(k.data(), H, kN, d)
                          : kvtrim::view3<T>::head_major(k.data(), H, kN, d);
    kv.values = token_major ? kvtrim::view3<T>::token_major(v.data(), H, kN, d)
                            : kvtrim::view3<T>::head_major(v.data(), H, kN, d);
    kv.queries = kvtrim::view3<const T>::head_major(q.data(), kShape.q_heads, kW, d);
    kv.out_proj = kvtrim::view3<const T>::head_major(wo.data(), kShape.q_heads, kHidden, d);
    kv.prompt_queries = kvtrim::view3<const T>::head_major(pq.data(), kShape.q_heads, kN, d);
    kv.attention_sums = kvtrim::view3<const float>::head_major(sums.data(), kShape.q_heads, kN, 1);
    kv.rope.base = 10000.0;
    return kv;
  }
  index_t token_at(index_t h, index_t row) {
    auto kv = views();
    EXPECT_EQ(kvtrim::to_float(kv.values(h, row, 0)), float(h));
    return index_t(kvtrim::to_float(kv.values(h, row, 1))) + 64 * index_t(kvtrim::to_float(kv.values(h, row, 2)));
  }
};

template <class T>
struct store final : kvtrim::layer_store<T> {
  std::vector<layer<T>>& layers;
  std::vector<std::vector<index_t>> lengths;
  explicit store(std::vector<layer<T>>& l) : layers(l), lengths(l.size()) {}
  kvtrim::layer_kv<T> compacted(int l, index_t h) override {
    kvtrim::layer_kv<T> kv = layers[size_t(l)].views();
    kv.keys = kv.keys.head_range(h, 1);
    kv.values = kv.values.head_range(h, 1);
    kv.queries = {};
    kv.kv_head_offset = h;
    return kv;
  }
  void resized(int l, const std::vector<index_t>& len) override { lengths[size_t(l)] = len; }
};

struct run_result {
  std::vector<std::vector<std::vector<index_t>>> kept;  // [layer][head] token indices
};

template <class T>
run_result run(const kvtrim::method& m, bool token_major, index_t budget_n = kN) {
  std::vector<layer<T>> layers;
  for (int l = 0; l < kShape.layers; ++l) layers.emplace_back(50u + unsigned(l), token_major);
  store<T> st(layers);
  auto seq = m.begin(budget_n);
  std::vector<std::vector<index_t>> first(size_t(kShape.layers));  // before any re-trim
  for (int l = 0; l < kShape.layers; ++l)
    st.lengths[size_t(l)] = first[size_t(l)] = seq->compress_layer(l, layers[size_t(l)].views(), st);
  run_result r;
  for (int l = 0; l < kShape.layers; ++l) {
    r.kept.emplace_back();
    for (index_t h = 0; h < kShape.kv_heads; ++h) {
      const index_t len = st.lengths[size_t(l)][size_t(h)];
      std::vector<index_t> toks;
      for (index_t i = 0; i < len; ++i) toks.push_back(layers[size_t(l)].token_at(h, i));
      // Rows past what the layer's own compaction kept are untouched: they still hold their own
      // token (a re-trim rewrites only rows inside the earlier, longer length).
      for (index_t i = first[size_t(l)][size_t(h)]; i < kN; ++i)
        if (layers[size_t(l)].token_at(h, i) != i) {
          ADD_FAILURE() << m.name() << ": row " << i << " of layer " << l << " head " << h << " was written";
          break;
        }
      r.kept.back().push_back(toks);
    }
  }
  return r;
}

class Conformance : public ::testing::TestWithParam<std::string> {
 protected:
  kvtrim::profile prof = synthetic_profile();
  kvtrim::method make(index_t budget = kB, kvtrim::param_values params = {}) {
    kvtrim::method_spec s;
    s.name = GetParam();
    s.target = kvtrim::budget::tokens(budget);
    s.window = kW;
    s.params = std::move(params);
    s.prof = &prof;
    return kvtrim::make_method(s, kShape);
  }
};

template <class T>
void check_invariants(const kvtrim::method& m, bool token_major) {
  const run_result r = run<T>(m, token_major);
  index_t total = 0;
  for (const auto& layer_kept : r.kept)
    for (const auto& toks : layer_kept) {
      ASSERT_GE(toks.size(), size_t(kW)) << m.name();
      for (size_t i = 1; i < toks.size(); ++i) ASSERT_LT(toks[i - 1], toks[i]) << m.name() << ": order kept";
      for (index_t i = 0; i < kW; ++i)
        ASSERT_EQ(toks[toks.size() - size_t(kW) + size_t(i)], kN - kW + i) << m.name() << ": window kept";
      total += index_t(toks.size());
    }
  const index_t want = m.name() == "full" ? kShape.layers * kShape.kv_heads * kN
                                          : kShape.layers * kShape.kv_heads * kB;
  EXPECT_EQ(total, want) << m.name() << ": exact total at equal B";
}

TEST_P(Conformance, InvariantsForEveryElementTypeAndLayout) {
  const kvtrim::method m = make();
  EXPECT_EQ(m.cascades(), kvtrim::find_method(GetParam()).cascades);
  for (bool tm : {false, true}) {
    check_invariants<float>(m, tm);
    check_invariants<kvtrim::half>(m, tm);
    check_invariants<kvtrim::bfloat16>(m, tm);
  }
}

TEST_P(Conformance, LayoutDoesNotChangeTheChoice) {
  const kvtrim::method m = make();
  EXPECT_EQ(run<float>(m, false).kept, run<float>(m, true).kept) << GetParam();
  EXPECT_EQ(run<kvtrim::half>(m, false).kept, run<kvtrim::half>(m, true).kept) << GetParam();
}

TEST_P(Conformance, BudgetAtLeastThePromptKeepsEverything) {
  const run_result r = run<float>(make(kN + 5), false);
  for (const auto& layer_kept : r.kept)
    for (const auto& toks : layer_kept) {
      std::vector<index_t> all(static_cast<size_t>(kN));
      std::iota(all.begin(), all.end(), index_t{0});
      EXPECT_EQ(toks, all) << GetParam();
    }
}

// copy_to keeps what compact_in_place keeps, row for row, into the caller's memory.
TEST_P(Conformance, CopyToAgreesWithInPlace) {
  const kvtrim::method m = make();
  layer<float> src(7, false), in_place(7, false);
  auto seq = m.begin(kN);
  const kvtrim::selection sel = seq->select(0, seq->score(0, src.views()));
  std::vector<float> dk(src.k.size(), -1.f), dv(src.v.size(), -1.f);
  const index_t H = kShape.kv_heads, d = kShape.head_dim;
  const kvtrim::copy_to<float> exec(kvtrim::view3<float>::head_major(dk.data(), H, kN, d),
                                    kvtrim::view3<float>::head_major(dv.data(), H, kN, d));
  const auto src_before = src.v;
  const auto len_copy = exec.apply(sel, src.views());
  EXPECT_EQ(src.v, src_before) << "copy_to only reads its source";
  const auto len_in_place = seq->evict(sel, in_place.views());
  ASSERT_EQ(len_copy, len_in_place);
  for (index_t h = 0; h < H; ++h)
    for (index_t t = 0; t < kN; ++t)
      for (index_t j = 0; j < d; ++j) {
        const float got = dv[size_t((h * kN + t) * d + j)];
        if (t < len_copy[size_t(h)])
          ASSERT_EQ(got, in_place.v[size_t((h * kN + t) * d + j)]) << GetParam();
        else
          ASSERT_EQ(got, -1.f) << GetParam() << ": nothing written past the new length";
      }
}

TEST_P(Conformance, EveryParameterDefaultIsValidAndBadValuesAreRejected) {
  const kvtrim::method_info& info = kvtrim::find_method(GetParam());
  for (const auto& p : info.params) {
    EXPECT_NO_THROW(make(kB, {{p.key, p.default_value}})) << GetParam() << ":" << p.key;
    for (const std::string bad : {"", "nan", "bogus", "1e400", "5x"})
      EXPECT_THROW(make(kB, {{p.key, bad}}), kvtrim::error) << GetParam() << ":" << p.key << "=" << bad;
    if (std::isfinite(p.min) && p.kind != kvtrim::param_kind::choice) {
      EXPECT_THROW(make(kB, {{p.key, std::to_string(p.min - 1)}}), kvtrim::error) << p.key;
    }
  }
  EXPECT_THROW(make(kB, {{"no_such_key", "1"}}), kvtrim::error) << GetParam();
}

TEST_P(Conformance, BadInputIsRejectedBeforeMemoryIsTouched) {
  const kvtrim::method m = make();
  EXPECT_THROW(m.begin(0), kvtrim::error);
  if (GetParam() == "full") {
    EXPECT_NO_THROW(m.begin(kW - 1));  // keeps everything: a prompt shorter than the window is fine
  } else {
    EXPECT_THROW(m.begin(kW - 1), kvtrim::error);  // window longer than the prompt
  }
  EXPECT_THROW(m.begin(kShape.context + 1), kvtrim::error);
  layer<float> l(3, false);
  std::vector<layer<float>> none;
  store<float> st(none);
  const auto v0 = l.v;
  auto seq = m.begin(kN);
  EXPECT_THROW(seq->compress_layer(kShape.layers, l.views(), st), kvtrim::error);  // no such layer
  auto kv = l.views();
  kv.queries = kvtrim::view3<const float>::head_major(l.q.data(), kShape.q_heads - 1, kW, kShape.head_dim);
  EXPECT_THROW(seq->compress_layer(0, kv, st), kvtrim::error);  // query heads disagree
  kv = l.views();
  kv.values = kvtrim::view3<float>::head_major(l.v.data(), kShape.kv_heads, kN - 1, kShape.head_dim);
  EXPECT_THROW(seq->compress_layer(0, kv, st), kvtrim::error);  // K and V disagree
  auto other = m.begin(kN - 10);
  EXPECT_THROW(other->compress_layer(0, l.views(), st), kvtrim::error);  // plan for another length
  EXPECT_EQ(l.v, v0) << GetParam();
  if (m.cascades()) {
    EXPECT_THROW(seq->compress_layer(0, l.views()), kvtrim::error);  // needs a store
  }
}

TEST_P(Conformance, ProfileNeedsAreEnforced) {
  const kvtrim::method_info& info = kvtrim::find_method(GetParam());
  kvtrim::method_spec s;
  s.name = GetParam();
  s.window = kW;
  if (info.needs_profile()) {
    EXPECT_THROW(kvtrim::make_method(s, kShape), kvtrim::error);
    kvtrim::model_shape other = kShape;
    other.layers = 4;
    s.prof = &prof;
    EXPECT_THROW(kvtrim::make_method(s, other), kvtrim::error);  // a profile of another model
  } else {
    EXPECT_NO_THROW(kvtrim::make_method(s, kShape));
  }
}

std::string param_name(const ::testing::TestParamInfo<std::string>& i) {
  std::string s = i.param;
  for (char& c : s)
    if (c == '-') c = '_';
  return s;
}

INSTANTIATE_TEST_SUITE_P(Registry, Conformance, ::testing::ValuesIn(kvtrim::method_names()), param_name);

TEST(Registry, NamesAreUniqueAndEveryEntryIsDescribed) {
  const auto names = kvtrim::method_names();
  for (size_t i = 0; i < names.size(); ++i)
    for (size_t j = i + 1; j < names.size(); ++j) EXPECT_NE(names[i], names[j]);
  for (const auto& m : kvtrim::method_registry()) {
    EXPECT_FALSE(m.paper.empty()) << m.name;
    EXPECT_FALSE(m.budget_allocator.empty()) << m.name;
    for (const auto& p : m.params) EXPECT_FALSE(p.help.empty()) << m.name << ":" << p.key;
  }
  EXPECT_THROW(kvtrim::find_method("nope"), kvtrim::error);
}

}  // namespace
