// Calibration accumulators on synthetic attention where the right scores are known by hand.
#include <gtest/gtest.h>

#include "expect_error.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "kvtrim/calibrate/layer_eviction_error.hpp"
#include "kvtrim/calibrate/retrieval_reasoning_score.hpp"
#include "kvtrim/calibrate/semantic_retrieval_score.hpp"
#include "kvtrim/profile/import.hpp"

using kvtrim::error;
using kvtrim::index_t;
namespace json = kvtrim::json;

namespace {


// q_heads rows of n_keys weights, each row given explicitly.
std::vector<float> rows(std::initializer_list<std::vector<float>> rs) {
  std::vector<float> out;
  for (const auto& r : rs) out.insert(out.end(), r.begin(), r.end());
  return out;
}

// Random softmax rows (weights > 0, each row sums to 1).
std::vector<float> random_rows(std::mt19937& rng, int heads, index_t n_keys) {
  std::normal_distribution<float> g(0.f, 2.f);
  std::vector<float> out(static_cast<std::size_t>(heads * n_keys));
  for (int h = 0; h < heads; ++h) {
    float sum = 0;
    for (index_t i = 0; i < n_keys; ++i) sum += out[h * n_keys + i] = std::exp(g(rng));
    for (index_t i = 0; i < n_keys; ++i) out[h * n_keys + i] /= sum;
  }
  return out;
}

int argmax(const std::vector<double>& v) { return static_cast<int>(std::max_element(v.begin(), v.end()) - v.begin()); }

// A script of calls on an accumulator: running it whole, or split anywhere into two runs joined by
// merge() or by serialise → restore, must give the same state.
template <class Acc>
using script = std::vector<std::function<void(Acc&)>>;

template <class Acc>
void run(Acc& acc, const script<Acc>& s, std::size_t from, std::size_t to) {
  for (std::size_t i = from; i < to; ++i) s[i](acc);
}

template <class Acc>
Acc restored(const Acc& acc) {
  return Acc::from_json(json::parse(json::dump(acc.to_json())));
}

constexpr int kL = 3, kH = 4;
constexpr index_t kKeys = 24;

// Five trials, each: a span of 4 tokens (one repeated) at a trial-dependent place, 6 decode
// steps over all layers, generated tokens drawn from the span and outside it; trial 3 discarded.
// `two_phase` uses observe() + end_step() instead of on_step().
script<kvtrim::semantic_retrieval_score> semantic_script(bool two_phase) {
  script<kvtrim::semantic_retrieval_score> s;
  for (int t = 0; t < 5; ++t) {
    std::mt19937 rng(100 + t);
    const std::vector<std::int32_t> span = {11, 12, 11, 13};
    const index_t begin = 2 + t;
    s.push_back([=](auto& a) { a.begin_trial(span, begin); });
    for (int step = 0; step < 6; ++step) {
      const std::int32_t token = std::vector<std::int32_t>{11, 12, 13, 99}[static_cast<std::size_t>(rng() % 4)];
      for (int l = 0; l < kL; ++l) {
        const std::vector<float> attn = random_rows(rng, kH, kKeys);
        if (two_phase) s.push_back([=](auto& a) { a.observe(l, attn.data(), kKeys); });
        else s.push_back([=](auto& a) { a.on_step(l, attn.data(), kKeys, token); });
      }
      if (two_phase) s.push_back([=](auto& a) { a.end_step(token); });
    }
    s.push_back([=](auto& a) { a.end_trial(t != 3); });
  }
  return s;
}

script<kvtrim::retrieval_reasoning_score> reasoning_script() {
  script<kvtrim::retrieval_reasoning_score> s;
  for (int t = 0; t < 5; ++t) {
    std::mt19937 rng(200 + t);
    const index_t begin = 1 + t, end = 6 + t;
    s.push_back([=](auto& a) { a.begin_trial(begin, end, t == 2 ? 2.5 : 1.0); });
    for (int step = 0; step < 5; ++step)
      for (int l = 0; l < kL; ++l) {
        const std::vector<float> attn = random_rows(rng, kH, kKeys);
        s.push_back([=](auto& a) { a.on_step(l, attn.data(), kKeys); });
      }
    s.push_back([=](auto& a) { a.end_trial(t != 1); });
  }
  return s;
}

script<kvtrim::layer_eviction_error> eviction_script() {
  script<kvtrim::layer_eviction_error> s;
  for (int n = 0; n < 6; ++n) {
    std::mt19937 rng(300 + n);
    std::normal_distribution<float> g;
    s.push_back([=](auto& a) { a.begin_sample(n % 2 ? "qasper" : "narrativeqa"); });
    for (int step = 0; step < 4; ++step)
      for (int l = 0; l < kL; ++l) {
        std::vector<float> full(16), comp(16);
        for (std::size_t i = 0; i < full.size(); ++i) full[i] = g(rng), comp[i] = full[i] + 0.1f * (l + 1) * g(rng);
        s.push_back([=](auto& a) { a.on_step(l, full.data(), comp.data(), 16); });
      }
    s.push_back([=](auto& a) { a.end_sample(n != 4); });
  }
  return s;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Semantic retrieval score (CompressKV)

TEST(SemanticRetrievalScoreTest, PlantedRetrievalHeadRanksFirst) {
  // 10 keys, answer span at positions [3, 6) holding tokens 7, 8, 9.
  kvtrim::semantic_retrieval_score s(2, 4);
  const std::vector<float> uniform(10, 0.1f);
  const std::vector<float> planted = {0, 0, 0, 0.25f, 0.25f, 0.5f, 0, 0, 0, 0};   // all mass on the span
  const std::vector<float> elsewhere = {0.5f, 0, 0, 0, 0, 0, 0, 0, 0, 0.5f};     // none on the span
  const auto layer0 = rows({uniform, elsewhere, uniform, uniform});
  const auto layer1 = rows({uniform, uniform, planted, uniform});
  s.begin_trial({7, 8, 9}, 3);
  for (std::int32_t token : {7, 8, 100}) {  // two steps generate span tokens, one does not
    s.on_step(0, layer0.data(), 10, token);
    s.on_step(1, layer1.data(), 10, token);
  }
  s.end_trial(true);
  const auto sc = s.scores();
  const double m = static_cast<double>(0.1f) + static_cast<double>(0.1f) + static_cast<double>(0.1f);
  EXPECT_EQ(sc[1][2], 2.0);  // mass 1 over the span, two matching steps
  EXPECT_EQ(sc[0][1], 0.0);
  EXPECT_EQ(sc[0][0], m + m);
  EXPECT_EQ(argmax(sc[1]), 2);
  EXPECT_GT(sc[1][2], *std::max_element(sc[0].begin(), sc[0].end()));
}

TEST(SemanticRetrievalScoreTest, RepeatedSpanTokensCountOncePerOccurrence) {
  // Span [2, 6) holds tokens 5, 6, 5, 5: generating 5 adds the head's span mass 3 times, 6 once,
  // 4 (not in the span) never. Head 0's span mass is 1, head 1's is 0.5.
  kvtrim::semantic_retrieval_score s(1, 2);
  const auto attn = rows({{0, 0, 0.25f, 0.25f, 0.25f, 0.25f, 0, 0}, std::vector<float>(8, 0.125f)});
  for (std::int32_t token : {5, 6, 4}) {
    s.begin_trial({5, 6, 5, 5}, 2);
    s.on_step(0, attn.data(), 8, token);
    s.end_trial(true);
  }
  EXPECT_EQ(json::dump(s.to_head_score_json()), R"({"0-0":[3,1,0],"0-1":[1.5,0.5,0]})");
  EXPECT_EQ(s.scores()[0][0], 4.0 / 3.0);
  EXPECT_EQ(s.scores()[0][1], 2.0 / 3.0);
}

TEST(SemanticRetrievalScoreTest, MeanOverKeptTrialsOnly) {
  kvtrim::semantic_retrieval_score s(1, 1);
  const std::vector<float> attn = {0, 1, 0, 0};
  EXPECT_EQ(s.scores()[0][0], 0.0);  // no trials yet
  const int steps[] = {1, 100, 3};
  const bool keep[] = {true, false, true};
  for (int t = 0; t < 3; ++t) {
    s.begin_trial({42}, 1);
    for (int i = 0; i < steps[t]; ++i) s.on_step(0, attn.data(), 4, 42);
    s.end_trial(keep[t]);
  }
  EXPECT_EQ(s.kept_trials(), 2);
  EXPECT_EQ(s.discarded_trials(), 1);
  EXPECT_EQ(s.scores()[0][0], 2.0);  // (1 + 3) / 2; the discarded trial's 100 is not counted
}

TEST(SemanticRetrievalScoreTest, TwoPhaseEqualsImmediateAndStridesWork) {
  kvtrim::semantic_retrieval_score a(kL, kH), b(kL, kH);
  run(a, semantic_script(false), 0, semantic_script(false).size());
  const auto two = semantic_script(true);
  run(b, two, 0, two.size());
  EXPECT_EQ(a.to_json(), b.to_json());
  EXPECT_GT(a.scores()[0][0], 0.0);
  // Rows padded to a stride of 6 give what packed rows give.
  const auto packed = rows({{0.5f, 0.25f, 0.25f, 0}, {0, 0, 0.5f, 0.5f}});
  const auto padded = rows({{0.5f, 0.25f, 0.25f, 0, 9, 9}, {0, 0, 0.5f, 0.5f, 9, 9}});
  kvtrim::semantic_retrieval_score p(1, 2), q(1, 2);
  p.begin_trial({1, 2}, 1);
  q.begin_trial({1, 2}, 1);
  p.on_step(0, packed.data(), 4, 2);
  q.on_step(0, padded.data(), 4, 2, 6);
  p.end_trial(true);
  q.end_trial(true);
  EXPECT_EQ(p.scores(), q.scores());
  EXPECT_EQ(p.scores()[0], (std::vector<double>{0.5, 0.5}));
}

TEST(SemanticRetrievalScoreTest, MergeEqualsAccumulatingAll) {
  const auto s = semantic_script(true);
  kvtrim::semantic_retrieval_score all(kL, kH);
  run(all, s, 0, s.size());
  // Split after every trial boundary.
  for (std::size_t cut = 0; cut <= s.size(); ++cut) {
    kvtrim::semantic_retrieval_score probe(kL, kH);
    run(probe, s, 0, cut);
    if (probe.trial_open()) continue;
    kvtrim::semantic_retrieval_score a(kL, kH), b(kL, kH);
    run(a, s, 0, cut);
    run(b, s, cut, s.size());
    a.merge(b);
    EXPECT_EQ(a.to_json(), all.to_json()) << "cut " << cut;
    EXPECT_EQ(a.scores(), all.scores());
  }
  kvtrim::semantic_retrieval_score open(kL, kH);
  run(open, s, 0, 3);
  EXPECT_ERROR_HAS(open.merge(all), "merge() while a trial is open");
  EXPECT_ERROR_HAS(all.merge(kvtrim::semantic_retrieval_score(kL, kH + 1)), "merge of layers = 3, q_heads = 5");
}

TEST(SemanticRetrievalScoreTest, SerialiseRestoreContinueEqualsUninterrupted) {
  const auto s = semantic_script(true);
  kvtrim::semantic_retrieval_score all(kL, kH);
  run(all, s, 0, s.size());
  for (std::size_t cut : {std::size_t(0), std::size_t(1), std::size_t(2), std::size_t(5), s.size() / 2, s.size() - 1}) {
    kvtrim::semantic_retrieval_score first(kL, kH);
    run(first, s, 0, cut);  // may stop mid-trial, with layers observed but not committed
    kvtrim::semantic_retrieval_score second = restored(first);
    EXPECT_EQ(second.to_json(), first.to_json());
    run(second, s, cut, s.size());
    EXPECT_EQ(second.to_json(), all.to_json()) << "cut " << cut;
  }
}

TEST(SemanticRetrievalScoreTest, HeadScoreJsonReadsBackThroughTheImporter) {
  kvtrim::semantic_retrieval_score a(kL, kH);
  const auto s = semantic_script(false);
  run(a, s, 0, s.size());
  EXPECT_EQ(kvtrim::parse_head_trial_scores(json::dump(a.to_head_score_json()), kL, kH), a.scores());
}

TEST(SemanticRetrievalScoreTest, ToProfile) {
  kvtrim::semantic_retrieval_score a(kL, kH);
  kvtrim::profile p;
  p.model = "m";
  p.layers = kL;
  p.q_heads = kH;
  p.kv_heads = 2;
  EXPECT_ERROR_HAS(a.to_profile(p), "to_profile() with no kept trials");
  const auto s = semantic_script(false);
  run(a, s, 0, s.size());
  a.to_profile(p);
  EXPECT_EQ(p.semantic_retrieval, a.scores());
  EXPECT_EQ(p.provenance.at("semantic_retrieval"),
            "kvtrim semantic_retrieval_score: mean over 4 kept trials (1 discarded)");
  EXPECT_NO_THROW(p.validate());
  p.q_heads = 8;
  EXPECT_ERROR_HAS(a.to_profile(p), "profile for model 'm' has layers = 3, q_heads = 8 but the scores have layers = 3, q_heads = 4");
}

TEST(SemanticRetrievalScoreTest, RejectsBadInput) {
  kvtrim::semantic_retrieval_score s(2, 2);
  const std::vector<float> attn(2 * 8, 0.125f);
  EXPECT_ERROR_HAS(kvtrim::semantic_retrieval_score(0, 2), "layers = 0 must be > 0");
  EXPECT_ERROR_HAS(kvtrim::semantic_retrieval_score(2, 0), "q_heads = 0 must be > 0");
  EXPECT_ERROR_HAS(s.on_step(0, attn.data(), 8, 1), "on_step() outside a trial");
  EXPECT_ERROR_HAS(s.end_step(1), "end_step() outside a trial");
  EXPECT_ERROR_HAS(s.end_trial(true), "end_trial() outside a trial");
  EXPECT_ERROR_HAS(s.begin_trial({}, 0), "empty answer span");
  EXPECT_ERROR_HAS(s.begin_trial({1}, -1), "span_begin = -1 must be >= 0");
  s.begin_trial({1, 2, 3}, 5);
  EXPECT_ERROR_HAS(s.begin_trial({1}, 0), "begin_trial() while a trial is open");
  EXPECT_ERROR_HAS(s.on_step(2, attn.data(), 8, 1), "layer = 2 must be in [0, 2)");
  EXPECT_ERROR_HAS(s.on_step(-1, attn.data(), 8, 1), "layer = -1");
  EXPECT_ERROR_HAS(s.on_step(0, nullptr, 8, 1), "attention rows are null");
  EXPECT_ERROR_HAS(s.on_step(0, attn.data(), 7, 1), "answer span [5, 8) lies beyond n_keys = 7");
  EXPECT_ERROR_HAS(s.on_step(0, attn.data(), 8, 1, 4), "row_stride = 4 must be >= n_keys = 8");
  EXPECT_ERROR_HAS(s.on_step(0, attn.data(), 0, 1), "n_keys = 0 must be > 0");
  std::vector<float> nan_attn = attn;
  nan_attn[8 + 6] = std::nanf("");
  EXPECT_ERROR_HAS(s.on_step(0, nan_attn.data(), 8, 1), "head 1 has attention mass nan");
  std::vector<float> neg = attn;
  neg[5] = -1.f;
  EXPECT_ERROR_HAS(s.observe(0, neg.data(), 8), "head 0 has attention mass");
  s.observe(1, attn.data(), 8);
  EXPECT_ERROR_HAS(s.observe(1, attn.data(), 8), "layer 1 observed twice in one step");
  EXPECT_ERROR_HAS(s.end_trial(true), "observed layers not committed");
  s.end_step(2);
  EXPECT_NO_THROW(s.end_trial(true));
  EXPECT_EQ(s.scores()[1][0], 0.375);  // one occurrence of token 2, mass 3 × 0.125
  EXPECT_EQ(s.scores()[0], (std::vector<double>{0.0, 0.0}));  // rejected calls changed nothing
  json::value bad = s.to_json();
  bad.set("kind", "retrieval_reasoning_score");
  EXPECT_ERROR_HAS(kvtrim::semantic_retrieval_score::from_json(bad), "state is not a semantic_retrieval_score");
  bad = s.to_json();
  bad.set("trials", json::parse("[[[1, 2]]]"));
  EXPECT_ERROR_HAS(kvtrim::semantic_retrieval_score::from_json(bad), "trials[0] has 1 rows, expected 2");
  bad = s.to_json();
  bad.set("trials", json::parse("[[[1, -2], [1, 2]]]"));
  EXPECT_ERROR_HAS(kvtrim::semantic_retrieval_score::from_json(bad), "values must be finite and >= 0");
}

// ---------------------------------------------------------------------------------------------
// Retrieval-reasoning score (HeadKV R2)

TEST(RetrievalReasoningScoreTest, TopNWithNEqualToSpanLength) {
  // 8 keys, span [2, 5): N = 3, so each head's 3 most-attended keys are looked at.
  kvtrim::retrieval_reasoning_score s(1, 4);
  const auto attn = rows({
      {0.05f, 0.05f, 0.3f, 0.2f, 0.1f, 0.25f, 0.05f, 0.0f},   // top 3 = 2, 5, 3: two fall in the span
      {0.0f, 0.0f, 0.5f, 0.25f, 0.25f, 0.0f, 0.0f, 0.0f},    // all mass on the span
      std::vector<float>(8, 0.125f),                          // all tied: top 3 = 0, 1, 2 (lower wins)
      {0.3f, 0.3f, 0.01f, 0.01f, 0.01f, 0.3f, 0.07f, 0.0f},  // span attended, but not in the top 3
  });
  s.begin_trial(2, 5);
  s.on_step(0, attn.data(), 8);
  s.end_trial(true);
  const auto sc = s.scores()[0];
  EXPECT_DOUBLE_EQ(sc[0], (double(0.3f) + double(0.2f)) / 3);  // 0.25 at position 5 is outside the span
  EXPECT_DOUBLE_EQ(sc[1], 1.0 / 3);
  EXPECT_DOUBLE_EQ(sc[2], 0.125 / 3);
  EXPECT_EQ(sc[3], 0.0);
  // A longer span: N = 6 of 8 keys; span positions 1 and 6 are the two least attended, so only
  // 2..5 count.
  kvtrim::retrieval_reasoning_score w(1, 1);
  const std::vector<float> row = {0.4f, 0.01f, 0.2f, 0.15f, 0.1f, 0.05f, 0.04f, 0.05f};
  w.begin_trial(1, 7);
  w.on_step(0, row.data(), 8);
  w.end_trial(true);
  EXPECT_DOUBLE_EQ(w.scores()[0][0], (double(0.2f) + double(0.15f) + double(0.1f) + double(0.05f)) / 6);
}

TEST(RetrievalReasoningScoreTest, ScaleReproducesHeadKVsFactor) {
  // HeadKV adds 10·a / (N·answer_tokens); scale = 10 / answer_tokens gives that.
  const std::vector<float> row = {0.0f, 0.0f, 0.5f, 0.25f, 0.25f, 0.0f};
  kvtrim::retrieval_reasoning_score plain(1, 1), scaled(1, 1);
  plain.begin_trial(2, 5);
  scaled.begin_trial(2, 5, 10.0 / 4);
  plain.on_step(0, row.data(), 6);
  scaled.on_step(0, row.data(), 6);
  plain.end_trial(true);
  scaled.end_trial(true);
  EXPECT_DOUBLE_EQ(plain.scores()[0][0], 1.0 / 3);
  EXPECT_DOUBLE_EQ(scaled.scores()[0][0], 10.0 * 1.0 / (3 * 4));
}

TEST(RetrievalReasoningScoreTest, PlantedHeadRanksFirstAndMeanOverKeptTrials) {
  kvtrim::retrieval_reasoning_score s(2, 3);
  std::mt19937 rng(5);
  for (int t = 0; t < 4; ++t) {
    s.begin_trial(10, 14);
    for (int step = 0; step < 3; ++step)
      for (int l = 0; l < 2; ++l) {
        auto attn = random_rows(rng, 3, 32);
        if (l == 1) {  // head 1 of layer 1 retrieves: its 4 largest weights sit on the span
          std::fill(attn.begin() + 32, attn.begin() + 64, 0.001f);
          for (int i = 10; i < 14; ++i) attn[32 + i] = 0.2f;
        }
        s.on_step(l, attn.data(), 32);
      }
    s.end_trial(t != 0);
  }
  const auto sc = s.scores();
  EXPECT_EQ(argmax(sc[1]), 1);
  EXPECT_DOUBLE_EQ(sc[1][1], 3 * 4 * double(0.2f) / 4);  // three steps, four span keys of 0.2 each, / N
  EXPECT_GT(sc[1][1], std::max(*std::max_element(sc[0].begin(), sc[0].end()), std::max(sc[1][0], sc[1][2])));
  EXPECT_EQ(s.kept_trials(), 3);
}

TEST(RetrievalReasoningScoreTest, MergeAndResumeEqualUninterrupted) {
  const auto s = reasoning_script();
  kvtrim::retrieval_reasoning_score all(kL, kH);
  run(all, s, 0, s.size());
  int merges = 0;
  for (std::size_t cut = 0; cut <= s.size(); ++cut) {
    kvtrim::retrieval_reasoning_score first(kL, kH);
    run(first, s, 0, cut);
    kvtrim::retrieval_reasoning_score resumed = restored(first);
    run(resumed, s, cut, s.size());
    EXPECT_EQ(resumed.to_json(), all.to_json()) << "resume at " << cut;
    if (first.trial_open()) continue;
    kvtrim::retrieval_reasoning_score second(kL, kH);
    run(second, s, cut, s.size());
    first.merge(second);
    EXPECT_EQ(first.scores(), all.scores()) << "merge at " << cut;
    ++merges;
  }
  EXPECT_EQ(merges, 6);
  EXPECT_EQ(kvtrim::parse_head_trial_scores(json::dump(all.to_head_score_json()), kL, kH), all.scores());
  kvtrim::profile p;
  p.layers = kL;
  p.q_heads = kH;
  p.kv_heads = 1;
  all.to_profile(p);
  EXPECT_EQ(p.retrieval_reasoning, all.scores());
  EXPECT_NE(p.provenance.at("retrieval_reasoning").find("mean over 4 kept trials (1 discarded)"), std::string::npos);
}

TEST(RetrievalReasoningScoreTest, RejectsBadInput) {
  kvtrim::retrieval_reasoning_score s(1, 2);
  std::vector<float> attn(16, 0.125f);
  EXPECT_ERROR_HAS(s.on_step(0, attn.data(), 8), "on_step() outside a trial");
  EXPECT_ERROR_HAS(s.begin_trial(3, 3), "answer span [3, 3) must be non-empty");
  EXPECT_ERROR_HAS(s.begin_trial(-1, 3), "answer span [-1, 3)");
  EXPECT_ERROR_HAS(s.begin_trial(0, 3, 0.0), "scale = 0 must be finite and > 0");
  s.begin_trial(4, 9);
  EXPECT_ERROR_HAS(s.on_step(0, attn.data(), 8), "answer span [4, 9) lies beyond n_keys = 8");
  EXPECT_ERROR_HAS(s.on_step(1, attn.data(), 9), "layer = 1 must be in [0, 1)");
  EXPECT_ERROR_HAS(s.on_step(0, attn.data(), 9, 5), "row_stride = 5 must be >= n_keys = 9");
  s.end_trial(false);
  s.begin_trial(0, 2);
  attn[8 + 3] = std::nanf("");
  EXPECT_ERROR_HAS(s.on_step(0, attn.data(), 8), "head 1 attention[3] = nan is not finite");
  s.end_trial(true);
  EXPECT_EQ(s.scores()[0], (std::vector<double>{0.0, 0.0}));  // head 0 was not half-added
  s.begin_trial(0, 2);
  json::value st = s.to_json();
  st.set("span_end", 0);
  EXPECT_ERROR_HAS(kvtrim::retrieval_reasoning_score::from_json(st), "span_end = 0 must be an integer in [1,");
}

// ---------------------------------------------------------------------------------------------
// Layer eviction error (CompressKV)

TEST(LayerEvictionErrorTest, FrobeniusRelativeError) {
  const double eps = 1e-6;
  // ‖(3,4)‖ = 5; comp differs by (0,4): e = 4 / (5 + eps).
  const float full[] = {3, 4}, comp[] = {3, 0};
  EXPECT_DOUBLE_EQ(kvtrim::layer_eviction_error::relative_error(full, comp, 2, eps), 4.0 / (5.0 + eps));
  // A 2×2 output: ‖[[1,2],[2,4]]‖_F = 5; comp [[1,2],[2,1]] differs by 3 in one entry: e = 3 / (5 + eps).
  const float f2[] = {1, 2, 2, 4}, c2[] = {1, 2, 2, 1};
  EXPECT_DOUBLE_EQ(kvtrim::layer_eviction_error::relative_error(f2, c2, 4, eps), 3.0 / (5.0 + eps));
  // eps keeps a zero full output finite: e = ‖comp‖ / eps.
  const float z[] = {0, 0}, c3[] = {0.5f, 0};
  EXPECT_DOUBLE_EQ(kvtrim::layer_eviction_error::relative_error(z, c3, 2, eps), 0.5 / eps);
  EXPECT_EQ(kvtrim::layer_eviction_error::relative_error(full, full, 2, eps), 0.0);
  // The accumulator adds e per step and layer.
  kvtrim::layer_eviction_error acc(2);
  EXPECT_EQ(acc.eps(), 1e-6);
  acc.begin_sample("d");
  acc.on_step(0, full, comp, 2);
  acc.on_step(0, f2, c2, 4);
  acc.on_step(1, full, full, 2);
  acc.end_sample();
  EXPECT_EQ(acc.sums("d"), (std::vector<double>{4.0 / (5.0 + eps) + 3.0 / (5.0 + eps), 0.0}));
  EXPECT_EQ(acc.sums("absent"), (std::vector<double>{0.0, 0.0}));
}

TEST(LayerEvictionErrorTest, WeightsAcrossTwoDatasetsByHand) {
  // Dataset A totals (1, 2, 1) → (0.25, 0.5, 0.25); B totals (3, 1, 0) → (0.75, 0.25, 0).
  // Mean: (0.5, 0.375, 0.125), which already sums to 1.
  EXPECT_EQ(kvtrim::layer_weights({{1, 2, 1}, {3, 1, 0}}), (std::vector<double>{0.5, 0.375, 0.125}));
  // Renormalisation matters when a row is dropped for summing to 0 (here: the mean of one row).
  EXPECT_EQ(kvtrim::layer_weights({{2, 2, 4}, {0, 0, 0}}), (std::vector<double>{0.25, 0.25, 0.5}));
  EXPECT_ERROR_HAS(kvtrim::layer_weights({{0, 0}}), "every row sums to 0");
  EXPECT_ERROR_HAS(kvtrim::layer_weights({{1, 2}, {1}}), "row 1 has 1 layers, expected 2");
  EXPECT_ERROR_HAS(kvtrim::layer_weights({{1, -2}}), "row 0[1] = -2");
  // The same through the accumulator: each step errs by u = 1 / (1 + eps).
  kvtrim::layer_eviction_error acc(3);
  const float one[] = {1}, two[] = {2};
  auto steps = [&](const char* dataset, std::vector<int> per_layer) {
    acc.begin_sample(dataset);
    for (int l = 0; l < 3; ++l)
      for (int i = 0; i < per_layer[static_cast<std::size_t>(l)]; ++i) acc.on_step(l, one, two, 1);
    acc.end_sample();
  };
  steps("A", {1, 2, 1});
  steps("B", {3, 1, 0});
  steps("C", {0, 0, 0});  // a dataset where nothing was evicted carries no information
  const auto w = acc.weights();
  ASSERT_EQ(w.size(), 3u);
  EXPECT_NEAR(w[0], 0.5, 1e-15);
  EXPECT_NEAR(w[1], 0.375, 1e-15);
  EXPECT_NEAR(w[2], 0.125, 1e-15);
  EXPECT_EQ(acc.datasets(), (std::vector<std::string>{"A", "B", "C"}));
  EXPECT_EQ(acc.samples("A"), 1);
  kvtrim::profile p;
  p.layers = 3;
  p.q_heads = 2;
  p.kv_heads = 1;
  acc.to_profile(p);
  EXPECT_EQ(p.layer_error, w);
  EXPECT_EQ(p.provenance.at("layer_error"),
            "kvtrim layer_eviction_error, eps 1e-06: A (1 samples), B (1 samples), C (1 samples)");
  EXPECT_NO_THROW(p.validate());
  p.layers = 4;
  EXPECT_ERROR_HAS(acc.to_profile(p), "has layers = 4 but the errors have layers = 3");
}

TEST(LayerEvictionErrorTest, MergeAndResumeEqualUninterrupted) {
  const auto s = eviction_script();
  kvtrim::layer_eviction_error all(kL);
  run(all, s, 0, s.size());
  EXPECT_EQ(all.samples("narrativeqa"), 2);  // samples 0, 2 (4 was dropped)
  EXPECT_EQ(all.samples("qasper"), 3);       // samples 1, 3, 5
  int merges = 0;
  for (std::size_t cut = 0; cut <= s.size(); ++cut) {
    kvtrim::layer_eviction_error first(kL);
    run(first, s, 0, cut);
    kvtrim::layer_eviction_error resumed = restored(first);
    run(resumed, s, cut, s.size());
    EXPECT_EQ(resumed.to_json(), all.to_json()) << "resume at " << cut;
    if (first.sample_open()) continue;
    kvtrim::layer_eviction_error second(kL);
    run(second, s, cut, s.size());
    first.merge(second);
    EXPECT_EQ(first.to_json(), all.to_json()) << "merge at " << cut;
    EXPECT_EQ(first.weights(), all.weights());
    ++merges;
  }
  EXPECT_EQ(merges, 7);
}

TEST(LayerEvictionErrorTest, RejectsBadInput) {
  EXPECT_ERROR_HAS(kvtrim::layer_eviction_error(0), "layers = 0 must be > 0");
  EXPECT_ERROR_HAS(kvtrim::layer_eviction_error(2, 0.0), "eps = 0 must be finite and > 0");
  EXPECT_ERROR_HAS(kvtrim::layer_eviction_error(2, -1.0), "eps = -1");
  kvtrim::layer_eviction_error e(2);
  const float a[] = {1, 2}, b[] = {1, std::nanf("")};
  EXPECT_ERROR_HAS(e.weights(), "weights() with no kept samples");
  EXPECT_ERROR_HAS(e.on_step(0, a, a, 2), "on_step() outside a sample");
  EXPECT_ERROR_HAS(e.end_sample(), "end_sample() without begin_sample()");
  EXPECT_ERROR_HAS(e.begin_sample(""), "empty dataset name");
  e.begin_sample("x");
  EXPECT_ERROR_HAS(e.begin_sample("y"), "begin_sample() while a sample is open");
  EXPECT_ERROR_HAS(e.on_step(2, a, a, 2), "layer = 2 must be in [0, 2)");
  EXPECT_ERROR_HAS(e.on_step(0, a, b, 2), "outputs are not finite");
  EXPECT_ERROR_HAS(e.on_step(0, a, nullptr, 2), "null output");
  EXPECT_ERROR_HAS(e.on_step(0, a, a, 0), "size = 0 must be > 0");
  EXPECT_ERROR_HAS(e.merge(kvtrim::layer_eviction_error(2)), "merge() while a sample is open");
  e.end_sample();
  EXPECT_ERROR_HAS(e.merge(kvtrim::layer_eviction_error(2, 1e-5)), "merge of layers = 2, eps = 1e-05");
  EXPECT_ERROR_HAS(e.merge(kvtrim::layer_eviction_error(3)), "merge of layers = 3");
  json::value st = e.to_json();
  st.set("datasets", json::parse(R"({"x": [[1]]})"));
  EXPECT_ERROR_HAS(kvtrim::layer_eviction_error::from_json(st), "datasets.x[0] has 1 entries, expected 2");
  st.set("datasets", json::parse(R"({"x": []})"));
  EXPECT_ERROR_HAS(kvtrim::layer_eviction_error::from_json(st), "datasets.x must be a non-empty array");
  st = e.to_json();
  st.set("eps", 0);
  EXPECT_ERROR_HAS(kvtrim::layer_eviction_error::from_json(st), "eps = 0 must be finite and > 0");
}
