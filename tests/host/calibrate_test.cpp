// kvtrim calibrate on the reference host at a tiny scale: the decode observer's contract, the
// accumulators fed by the real model, an end-to-end profile that CompressKV accepts, resume
// giving the same profile, and profiles of other models rejected. The accumulators' own
// arithmetic (planted heads on constructed attention) is tested in tests/unit/calibrate_test.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "calibrate/calibration.hpp"
#include "calibrate/stage.hpp"
#include "calibrate/trial_keys.hpp"
#include "kvtrim/calibrate/semantic_retrieval_score.hpp"
#include "engine/compression.hpp"
#include "engine/gguf.hpp"
#include "engine/model.hpp"
#include "engine/runner.hpp"
#include "engine/tokenizer.hpp"
#include "kvtrim/compose/method.hpp"
#include "kvtrim/profile/profile.hpp"

namespace {

namespace fs = std::filesystem;

class CalibrateTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const auto path = kvhost::default_model_path();
    if (!fs::exists(path)) {
      missing_ = "model not found at " + path + ": run scripts/fetch_model.sh (or set KVTRIM_MODEL)";
      return;
    }
    if (!fs::exists(kvhost::default_calibration_data_dir() + "/leval/gov_report_summ.jsonl")) {
      missing_ = "calibration data not found under " + kvhost::default_calibration_data_dir();
      return;
    }
    const kvhost::gguf_file f(path);
    model_ = std::make_unique<kvhost::model>(f);
    tok_ = std::make_unique<kvhost::tokenizer>(kvhost::tokenizer::from_gguf(f));
    stops_ = kvhost::default_stop_tokens(f);
    id_.name = "SmolLM2-135M-Instruct";
    id_.path = path;
    id_.sha256 = kvhost::sha256_file(path);
    root_ = fs::temp_directory_path() / ("kvtrim_calibrate_test_" + std::to_string(::getpid()));
    fs::create_directories(root_);
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    if (!root_.empty()) fs::remove_all(root_, ec);
  }
  void SetUp() override { ASSERT_TRUE(model_) << missing_; }

  // The CI scale: one needle of each kind, lengths 256 and 512, two depths, one short prompt
  // per dataset for the layer errors.
  static kvhost::calibration_options tiny(const std::string& resume) {
    kvhost::calibration_options o;
    o.lengths = {256, 512};
    o.depths = 2;
    o.needles = {"lemon-cake"};
    o.reasoning_needle_names = {"bridges"};
    o.max_new_tokens = 12;
    o.layer_prompts = 1;
    o.layer_prompt_tokens = 256;
    o.layer_max_new_tokens = 6;
    o.resume_dir = resume.empty() ? "" : resume == "full" ? shared_dir().string() : (root_ / resume).string();
    o.progress = false;
    return o;
  }
  // ctest runs every case in its own process: the uninterrupted run's trials are shared between
  // them through a directory named for this test binary's build time, so it runs once per build.
  static fs::path shared_dir() {
    std::error_code ec;
    const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
    const auto stamp = ec ? 0 : fs::last_write_time(exe, ec).time_since_epoch().count();
    return fs::temp_directory_path() / ("kvtrim_calibrate_shared_" + std::to_string(stamp));
  }
  static kvtrim::model_shape shape() { return kvhost::kvtrim_shape(model_->config()); }

  // The uninterrupted tiny run, shared by the tests that need a profile.
  static const kvhost::calibration_result& full_run() {
    static const kvhost::calibration_result r = kvhost::calibrate(*model_, *tok_, stops_, id_, tiny("full"));
    return r;
  }

  inline static std::unique_ptr<kvhost::model> model_;
  inline static std::unique_ptr<kvhost::tokenizer> tok_;
  inline static std::vector<int32_t> stops_;
  inline static kvhost::model_identity id_;
  inline static fs::path root_;
  inline static std::string missing_;
};

// The observer sees each layer once per step, with the step's query and the cache including the
// new token: softmax(q·Kᵀ/√d)·V recomputed from them equals the model's own attention output,
// and observing changes nothing in the logits.
TEST_F(CalibrateTest, DecodeObserverSeesQueryCacheAndOutput) {
  const auto& c = model_->config();
  const std::vector<int> ids = tok_->encode("The quick brown fox jumps over the lazy dog. It was a sunny", false);
  const std::vector<int32_t> prompt(ids.begin(), ids.end());
  kvhost::kv_store plain, watched;
  model_->prefill(prompt, plain);
  model_->prefill(prompt, watched);
  const std::vector<float> want = model_->decode_step(42, plain);
  std::vector<int> calls(static_cast<size_t>(c.n_layer), 0);
  double worst = 0;
  const int hd = c.head_dim, G = c.group();
  const auto n = static_cast<int64_t>(prompt.size());
  const std::vector<float> got =
      model_->decode_step(42, watched, [&](int layer, const float* q, const kvhost::kv_store& cache, const float* out) {
        ++calls[static_cast<size_t>(layer)];
        for (int g = 0; g < c.n_kv_head; ++g) EXPECT_EQ(cache.length(layer, g), n + 1);
        for (int h = 0; h < c.n_head; ++h) {
          const float* K = cache.k(layer, h / G);
          const float* V = cache.v(layer, h / G);
          std::vector<double> s(static_cast<size_t>(n + 1));
          double mx = -1e300, sum = 0;
          for (int64_t t = 0; t <= n; ++t) {
            double d = 0;
            for (int i = 0; i < hd; ++i) d += double(q[h * hd + i]) * K[t * hd + i];
            s[size_t(t)] = d / std::sqrt(double(hd));
            mx = std::max(mx, s[size_t(t)]);
          }
          for (auto& x : s) sum += (x = std::exp(x - mx));
          for (int i = 0; i < hd; ++i) {
            double o = 0;
            for (int64_t t = 0; t <= n; ++t) o += s[size_t(t)] / sum * V[t * hd + i];
            worst = std::max(worst, std::fabs(o - out[h * hd + i]));
          }
        }
      });
  for (int l = 0; l < c.n_layer; ++l) EXPECT_EQ(calls[size_t(l)], 1) << "layer " << l;
  EXPECT_LT(worst, 1e-4);
  EXPECT_EQ(got, want);
}

// The semantic score adds a head's span mass only at steps whose token is in the span (k times
// for a token the span holds k times); the span mass adds it at every step. So per head
// semantic ≤ k_max · span_mass, and with answers copied from the needle some head scores > 0.
TEST_F(CalibrateTest, AccumulatorsFedByTheHost) {
  const auto& r = full_run();
  ASSERT_TRUE(r.complete);
  ASSERT_EQ(r.stages.size(), 3u);
  EXPECT_EQ(r.stages[0].planned, 4);  // 1 needle x 2 lengths x 2 depths
  EXPECT_GE(r.stages[0].kept, 1);
  EXPECT_EQ(r.stages[2].planned, 4);  // one prompt per dataset
  const auto& p = r.prof;
  const std::vector<int> fact = tok_->encode(" " + kvhost::retrieval_needles()[0].nd.fact, false);
  std::map<int, int> occ;
  int k_max = 0;
  for (int t : fact) k_max = std::max(k_max, ++occ[t]);
  double best = 0;
  for (int l = 0; l < p.layers; ++l)
    for (int h = 0; h < p.q_heads; ++h) {
      const double s = p.semantic_retrieval[size_t(l)][size_t(h)];
      EXPECT_LE(s, k_max * r.span_mass[size_t(l)][size_t(h)] * (1 + 1e-9) + 1e-12) << l << "/" << h;
      EXPECT_LE(r.span_mass[size_t(l)][size_t(h)], 12.0) << "mass <= 1 per decode step";
      best = std::max(best, s);
    }
  EXPECT_GT(best, 0.0);
  // Heads differ: a calibration that gave every head the same score would select nothing.
  int layers_with_spread = 0;
  for (const auto& row : p.semantic_retrieval)
    layers_with_spread += *std::max_element(row.begin(), row.end()) > *std::min_element(row.begin(), row.end());
  EXPECT_GT(layers_with_spread, p.layers / 2);
  double sum = 0;
  for (double w : p.layer_error) {
    EXPECT_TRUE(std::isfinite(w) && w >= 0);
    sum += w;
  }
  EXPECT_NEAR(sum, 1.0, 1e-9);
}

TEST_F(CalibrateTest, TinyProfileIsValidAndDrivesCompressKV) {
  const auto& r = full_run();
  ASSERT_TRUE(r.complete);
  const kvtrim::profile& p = r.prof;
  EXPECT_NO_THROW(p.validate());
  EXPECT_TRUE(p.has_semantic_retrieval() && p.has_retrieval_reasoning() && p.has_layer_error());
  EXPECT_EQ(p.model_sha256, id_.sha256);
  for (const char* k : {"tool", "date", "model_file", "data", "semantic_retrieval", "retrieval_reasoning",
                        "layer_error", "semantic_retrieval_needles"})
    EXPECT_TRUE(p.provenance.count(k)) << k;
  EXPECT_NE(p.provenance.at("data").find("financial_qa.jsonl"), std::string::npos);
  // Round trip through the file, then CompressKV on a real prompt.
  const std::string path = (root_ / "tiny.json").string();
  kvtrim::save_profile(p, path);
  const kvtrim::profile q = kvtrim::load_profile(path);
  EXPECT_EQ(kvtrim::to_json(q), kvtrim::to_json(p));
  kvtrim::method_spec cfg;
  cfg.name = "compresskv";
  cfg.target = kvtrim::budget::tokens(32);
  cfg.prof = &q;
  const kvtrim::method m = kvtrim::make_method(cfg, shape());
  const std::vector<int> ids = tok_->encode(
      tok_->apply_chat_template({{"user", std::string(300, 'a') + " What letter was repeated?"}}, true), true);
  const kvhost::run_report rep = kvhost::run_generation(*model_, *tok_, std::vector<int32_t>(ids.begin(), ids.end()),
                                                        &m, 4, stops_);
  EXPECT_LT(rep.kv_bytes, rep.kv_full_bytes);
}

// Stopped after 3 trials, then rerun on the same resume directory: the same scores and
// provenance as the uninterrupted run (up to the run date), and a third run reuses every trial
// and reproduces the profile exactly. (Stages heads + layers: reasoning runs the same code path
// as heads and would only add CI time.)
TEST_F(CalibrateTest, InterruptedRunResumesToTheSameProfile) {
  const auto& full = full_run();
  ASSERT_TRUE(full.complete);
  auto o = tiny("resumed");
  o.stages = {"heads", "layers"};
  o.max_trials = 3;
  const auto part = kvhost::calibrate(*model_, *tok_, stops_, id_, o);
  EXPECT_FALSE(part.complete);
  EXPECT_EQ(part.stages.at(0).run, 3);
  o.max_trials = -1;
  const auto rest = kvhost::calibrate(*model_, *tok_, stops_, id_, o);
  ASSERT_TRUE(rest.complete);
  EXPECT_EQ(rest.stages.at(0).reused, 3);
  EXPECT_EQ(rest.stages.at(0).run, 1);
  EXPECT_EQ(rest.prof.semantic_retrieval, full.prof.semantic_retrieval);
  EXPECT_EQ(rest.prof.layer_error, full.prof.layer_error);
  EXPECT_EQ(rest.span_mass, full.span_mass);
  EXPECT_EQ(rest.copy_score, full.copy_score);
  for (const auto& [k, v] : rest.prof.provenance)
    if (k != "date") {
      EXPECT_EQ(v, full.prof.provenance.at(k)) << k;
    }
  const auto again = kvhost::calibrate(*model_, *tok_, stops_, id_, o);
  ASSERT_TRUE(again.complete);
  for (const auto& s : again.stages) EXPECT_EQ(s.run, 0) << s.stage;
  EXPECT_EQ(kvtrim::json::dump(kvtrim::to_json(again.prof)), kvtrim::json::dump(kvtrim::to_json(rest.prof)));
}

// Two shards in their own resume directories split the needle trials between them (even
// trials to shard 0, odd to 1, heads and reasoning both), write nothing and skip stage layers;
// their logs concatenated into one directory and rerun without a shard reuse every needle trial
// and give the uninterrupted run's profile.
TEST_F(CalibrateTest, ShardsMergedGiveTheUnshardedProfile) {
  const auto& full = full_run();
  ASSERT_TRUE(full.complete);
  const fs::path merged = root_ / "shards-merged";
  fs::create_directories(merged);
  for (int k = 0; k < 2; ++k) {
    auto o = tiny("shard" + std::to_string(k));
    o.shard = k;
    o.shards = 2;
    const auto r = kvhost::calibrate(*model_, *tok_, stops_, id_, o);
    EXPECT_FALSE(r.complete);
    ASSERT_EQ(r.stages.size(), 2u) << "stage layers must not run in a shard";
    EXPECT_EQ(r.stages.at(0).stage, "heads");
    EXPECT_EQ(r.stages.at(0).run, 2);  // 4 heads trials (2 lengths x 2 depths), every other one
    EXPECT_EQ(r.stages.at(1).stage, "reasoning");
    EXPECT_EQ(r.stages.at(1).run, 2);
    for (const char* f : {"heads.jsonl", "reasoning.jsonl"}) {
      std::ofstream(merged / f, std::ios::app) << std::ifstream(fs::path(o.resume_dir) / f).rdbuf();
    }
    if (k == 0) fs::copy_file(fs::path(o.resume_dir) / "run.json", merged / "run.json");
  }
  auto o = tiny("shards-merged");
  const auto r = kvhost::calibrate(*model_, *tok_, stops_, id_, o);
  ASSERT_TRUE(r.complete);
  EXPECT_EQ(r.stages.at(0).run, 0);
  EXPECT_EQ(r.stages.at(0).reused, 4);
  EXPECT_EQ(r.stages.at(1).run, 0);
  EXPECT_EQ(r.stages.at(1).reused, 4);
  EXPECT_EQ(r.prof.semantic_retrieval, full.prof.semantic_retrieval);
  EXPECT_EQ(r.prof.retrieval_reasoning, full.prof.retrieval_reasoning);
  EXPECT_EQ(r.prof.layer_error, full.prof.layer_error);
  for (int bad : {-1, 2}) {
    auto x = tiny("");
    x.shards = 2;
    x.shard = bad;
    EXPECT_THROW(kvhost::calibrate(*model_, *tok_, stops_, id_, x), std::invalid_argument) << bad;
  }
}

// The shipped profile is rebuilt, score for score, from its committed calibration records
// (bench/calibration/2026-12-02) by the commands its README gives, without running a trial
// (max_trials 0: a key that no longer matches fails here instead of running for hours).
TEST_F(CalibrateTest, ShippedProfileRebuildsFromItsRecords) {
  const fs::path rec = fs::path(KVTRIM_SOURCE_DIR) / "bench/calibration/2026-12-02";
  const fs::path dir = root_ / "shipped";
  fs::create_directories(dir);
  fs::copy_file(rec / "run.json", dir / "run.json", fs::copy_options::overwrite_existing);
  for (const char* f : {"heads", "reasoning", "layers"}) {
    const std::string cmd = "gunzip -c '" + (rec / (std::string(f) + ".jsonl.gz")).string() + "' > '" +
                            (dir / (std::string(f) + ".jsonl")).string() + "'";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  }
  kvhost::calibration_options o;
  o.lengths = {512, 1024, 1536, 2048, 3072, 4096, 5120, 6144, 7168, 8100};
  o.depths = 10;
  o.max_new_tokens = 50;
  o.layer_prompts = 8;
  o.layer_prompt_tokens = 4096;
  o.layer_max_new_tokens = 24;
  o.resume_dir = dir.string();
  o.max_trials = 0;
  o.progress = false;
  o.stages = {"heads"};
  o.base = kvtrim::load_profile(std::string(KVTRIM_SOURCE_DIR) + "/profiles/archive/smollm2-135m-instruct-2026-11-25.json");
  const auto heads = kvhost::calibrate(*model_, *tok_, stops_, id_, o);
  ASSERT_TRUE(heads.complete);
  o.stages = {"layers"};
  o.base = heads.prof;
  const auto r = kvhost::calibrate(*model_, *tok_, stops_, id_, o);
  ASSERT_TRUE(r.complete);
  const kvtrim::profile shipped =
      kvtrim::load_profile(std::string(KVTRIM_SOURCE_DIR) + "/profiles/smollm2-135m-instruct.json");
  EXPECT_EQ(r.prof.semantic_retrieval, shipped.semantic_retrieval);
  EXPECT_EQ(r.prof.retrieval_reasoning, shipped.retrieval_reasoning);
  EXPECT_EQ(r.prof.layer_error, shipped.layer_error);
  EXPECT_EQ(r.prof.provenance, shipped.provenance);
}

TEST_F(CalibrateTest, ProfileOfAnotherModelIsRejected) {
  const auto& r = full_run();
  ASSERT_TRUE(r.complete);
  kvtrim::profile other = r.prof;  // a 24-layer model's profile
  other.model = "another-model";
  other.layers = 24;
  other.semantic_retrieval.resize(24);
  other.retrieval_reasoning.resize(24);
  other.layer_error.resize(24);
  ASSERT_NO_THROW(other.validate());
  EXPECT_THROW(other.check_matches(shape()), kvtrim::error);
  kvtrim::method_spec cfg;
  cfg.name = "compresskv";
  cfg.prof = &other;
  EXPECT_THROW(kvtrim::make_method(cfg, shape()), kvtrim::error);
  // Nor does calibration build on it.
  auto o = tiny("");
  o.stages = {"layers"};
  o.base = other;
  EXPECT_THROW(kvhost::calibrate(*model_, *tok_, stops_, id_, o), kvtrim::error);
  // A resume directory of another model file is refused.
  kvhost::model_identity wrong = id_;
  wrong.sha256 = std::string(64, '0');
  EXPECT_THROW(kvhost::calibrate(*model_, *tok_, stops_, wrong, tiny("full")), std::runtime_error);
}

TEST_F(CalibrateTest, BadOptionsAreRejectedBeforeAnyTrial) {
  auto bad = [&](auto edit) {
    auto o = tiny("bad");
    edit(o);
    EXPECT_THROW(kvhost::calibrate(*model_, *tok_, stops_, id_, o), std::exception);
  };
  bad([](auto& o) { o.stages = {"weights"}; });
  bad([](auto& o) { o.needles = {"no-such-needle"}; });
  bad([](auto& o) { o.lengths = {256, 100000}; });
  bad([](auto& o) { o.depths = 0; });
  bad([](auto& o) { o.stages = {"layers"}; });  // no heads and no --profile
  bad([](auto& o) { o.data_dir = "/nonexistent"; });
  EXPECT_FALSE(fs::exists(root_ / "bad"));  // nothing written
}

TEST(CalibrationHelpers, Sha256AndF1) {
  const fs::path f = fs::temp_directory_path() / ("kvtrim_sha_" + std::to_string(::getpid()));
  {
    std::ofstream(f, std::ios::binary) << "abc";
  }
  EXPECT_EQ(kvhost::sha256_file(f.string()), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  {
    std::ofstream(f, std::ios::binary) << std::string(1000, 'a');  // spans several 64-byte blocks
  }
  EXPECT_EQ(kvhost::sha256_file(f.string()), "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3");
  fs::remove(f);
  // 3 common words, 4 candidate words, 5 reference words: P = 3/4, R = 3/5.
  EXPECT_NEAR(kvhost::word_f1("The Osterley bridge, red!", "the osterley bridge is painted"), 2 * 0.75 * 0.6 / 1.35, 1e-12);
  EXPECT_EQ(kvhost::word_f1("", "x"), 0.0);
}

// The model's digest as the hand-written SHA-256 of earlier versions wrote it into the shipped
// profile (profiles/smollm2-135m-instruct.json) and the llama.cpp golden file: OpenSSL's must match.
TEST(CalibrationHelpers, Sha256OfTheModelMatchesTheShippedProfile) {
  const std::string path = kvhost::default_model_path();
  if (!std::ifstream(path)) GTEST_FAIL() << "model missing: run scripts/fetch_model.sh";
  EXPECT_EQ(kvhost::sha256_file(path), "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53");
  EXPECT_EQ(kvtrim::load_profile(std::string(KVTRIM_SOURCE_DIR) + "/profiles/smollm2-135m-instruct.json").model_sha256,
            kvhost::sha256_file(path));
  const fs::path f = fs::temp_directory_path() / ("kvtrim_sha_empty_" + std::to_string(::getpid()));
  std::ofstream(f, std::ios::binary).close();
  EXPECT_EQ(kvhost::sha256_file(f.string()), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  fs::remove(f);
  EXPECT_THROW(kvhost::sha256_file(f.string()), std::runtime_error);
}

// ---- issue 15: resume keys, wrong-type records, torn lines ------------------------------------

std::vector<std::string> lines_of(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::vector<std::string> out;
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

// A trial's haystack slice depends on its place in --lengths: reordering the list must rerun the
// trials it moved (was: silently reused, a different profile); an unchanged list reuses them.
TEST_F(CalibrateTest, ResumeKeysRecordTheHaystackSlice) {
  auto o = tiny("order");
  o.stages = {"heads"};
  o.depths = 1;
  o.lengths = {512, 256};
  o.max_trials = 1;  // runs len 512 at haystack start 0
  const auto first = kvhost::calibrate(*model_, *tok_, stops_, id_, o);
  ASSERT_FALSE(first.complete);
  const auto log = lines_of(fs::path(o.resume_dir) / "heads.jsonl");
  ASSERT_EQ(log.size(), 1u);
  EXPECT_NE(log[0].find("len=512"), std::string::npos);
  EXPECT_NE(log[0].find("|start=0\""), std::string::npos) << log[0];

  o.lengths = {256, 512};  // len 512 moves to start 3: its old trial does not fit
  const auto moved = kvhost::calibrate(*model_, *tok_, stops_, id_, o);
  EXPECT_FALSE(moved.complete);
  EXPECT_EQ(moved.stages.at(0).reused, 0);
  EXPECT_EQ(moved.stages.at(0).run, 1);

  o.lengths = {512, 256};  // the first list again: its trial is reused
  o.max_trials = 0;
  const auto same = kvhost::calibrate(*model_, *tok_, stops_, id_, o);
  EXPECT_EQ(same.stages.at(0).reused, 1);

  // A resume directory of an older kvtrim (keys without "|start=") is not reused: its trials do
  // not say which haystack slice they ran on, so they run again rather than risk another profile.
  const fs::path legacy = root_ / "legacy";
  fs::create_directories(legacy);
  fs::copy_file(fs::path(o.resume_dir) / "run.json", legacy / "run.json");
  std::string rec = log[0];
  rec.erase(rec.find("|start=0"), 8);
  std::ofstream(legacy / "heads.jsonl", std::ios::binary) << rec << "\n";
  o.resume_dir = legacy.string();
  const auto old = kvhost::calibrate(*model_, *tok_, stops_, id_, o);
  EXPECT_EQ(old.stages.at(0).reused, 0);
}

// ---- issue 13: calibration as the official detectors run it -------------------------------------

// The answer's tokens inside each retrieval needle: inside the fact, shorter than it, and
// decoding to text that holds the answer.
TEST_F(CalibrateTest, AnswerSpanIsTheAnswersTokensInsideTheNeedle) {
  for (const auto& nd : kvhost::retrieval_needles()) {
    std::vector<int32_t> toks = {1, 2};  // a frame before the fact
    const auto fact = tok_->encode(" " + nd.nd.fact, false);
    toks.insert(toks.end(), fact.begin(), fact.end());
    toks.push_back(3);
    const int64_t b = 2, e = 2 + static_cast<int64_t>(fact.size());
    const auto [ab, ae] = kvhost::calib::answer_token_span(*tok_, toks, b, e, nd.nd.answer);
    EXPECT_GE(ab, b) << nd.name;
    EXPECT_LE(ae, e) << nd.name;
    EXPECT_LT(ae - ab, e - b) << nd.name;
    const std::string text = tok_->decode(std::vector<int>(toks.begin() + ab, toks.begin() + ae));
    EXPECT_NE(text.find(nd.nd.answer), std::string::npos) << nd.name << ": '" << text << "'";
    // One token fewer on either side loses part of the answer.
    EXPECT_EQ(tok_->decode(std::vector<int>(toks.begin() + ab + 1, toks.begin() + ae)).find(nd.nd.answer),
              std::string::npos);
    EXPECT_EQ(tok_->decode(std::vector<int>(toks.begin() + ab, toks.begin() + ae - 1)).find(nd.nd.answer),
              std::string::npos);
  }
  EXPECT_THROW(kvhost::calib::answer_token_span(*tok_, {5, 6, 7}, 0, 3, "not there at all"), std::invalid_argument);
}

// Synthetic attention where the answer is known: head 0 attends to the answer's tokens, head 1
// to the needle's other tokens. Credited over the answer span (the official detector) only head 0
// scores; over the whole needle (kvtrim's earlier choice) head 1 scores too.
TEST_F(CalibrateTest, OnlyTheAnswerSpanIsCredited) {
  const auto& nd = kvhost::retrieval_needles()[0];
  const auto fact = tok_->encode(" " + nd.nd.fact, false);
  std::vector<int32_t> toks(fact.begin(), fact.end());
  const int64_t n = static_cast<int64_t>(toks.size());
  const auto [ab, ae] = kvhost::calib::answer_token_span(*tok_, toks, 0, n, nd.nd.answer);
  ASSERT_GT(ab, 0);
  std::vector<float> attn(static_cast<size_t>(2 * n), 0.0f);
  for (int64_t i = ab; i < ae; ++i) attn[size_t(i)] = 1.0f / static_cast<float>(ae - ab);
  for (int64_t i = 0; i < ab; ++i) attn[size_t(n + i)] = 1.0f / static_cast<float>(ab);
  auto score = [&](int64_t b, int64_t e) {
    kvtrim::semantic_retrieval_score s(1, 2);
    s.begin_trial(std::vector<int32_t>(toks.begin() + b, toks.begin() + e), b);
    for (int64_t i = ab; i < ae; ++i) s.on_step(0, attn.data(), n, toks[size_t(i)]);  // copies the answer
    s.end_trial(true);
    return s.scores()[0];
  };
  const auto answer_only = score(ab, ae), needle = score(0, n);
  EXPECT_GT(answer_only[0], 0.0);
  EXPECT_EQ(answer_only[1], 0.0);
  EXPECT_GT(needle[1], 0.0);
}

// The first answer step observed (prefill all but the last prompt token, as the official
// detectors) adds that step's attention to every head's score; the later steps are the same
// steps, so no head loses score (up to the float noise of computing the last prompt token's K/V
// in a decode step instead of the prefill), and the answer is the same.
TEST_F(CalibrateTest, FirstAnswerStepObservedAddsItsAttention) {
  auto run = [&](const std::string& first) {
    auto o = tiny("");
    o.stages = {"heads"};
    o.lengths = {256};
    o.depths = 1;
    o.srh_span = "needle";
    o.first_step = first;
    return kvhost::calibrate(*model_, *tok_, stops_, id_, o);
  };
  const auto observed = run("observed"), prefill = run("prefill");
  ASSERT_TRUE(observed.complete && prefill.complete);
  ASSERT_EQ(observed.stages.at(0).kept, 1);
  ASSERT_EQ(prefill.stages.at(0).kept, 1);
  double gained = 0;
  for (size_t l = 0; l < observed.span_mass.size(); ++l)
    for (size_t h = 0; h < observed.span_mass[l].size(); ++h) {
      EXPECT_GE(observed.span_mass[l][h], prefill.span_mass[l][h] - 1e-4) << l << "/" << h;
      EXPECT_GE(observed.prof.semantic_retrieval[l][h], prefill.prof.semantic_retrieval[l][h] - 1e-3) << l << "/" << h;
      gained = std::max(gained, observed.span_mass[l][h] - prefill.span_mass[l][h]);
    }
  EXPECT_GT(gained, 0.01);  // one more step of attention mass over the needle
  EXPECT_NE(observed.prof.provenance.at("semantic_retrieval_settings").find("first answer step: observed"),
            std::string::npos);
  EXPECT_NE(prefill.prof.provenance.at("semantic_retrieval_settings").find("--first-step prefill"), std::string::npos);
  EXPECT_NE(prefill.prof.provenance.at("semantic_retrieval_settings").find("the whole needle"), std::string::npos);
}

// Every setting that changes a trial's result is in its resume key: a resume folder is never
// reused across them; kvtrim's earlier settings keep the keys older folders hold.
TEST_F(CalibrateTest, ResumeKeysCarryTheObservationSettings) {
  auto o = tiny("settings");
  o.stages = {"heads"};
  o.lengths = {256};
  o.depths = 1;
  o.max_trials = 1;
  const auto first = kvhost::calibrate(*model_, *tok_, stops_, id_, o);
  ASSERT_TRUE(first.complete);
  const auto log = lines_of(fs::path(o.resume_dir) / "heads.jsonl");
  ASSERT_EQ(log.size(), 1u);
  EXPECT_NE(log[0].find("|span=answer|first=observed|start=0\""), std::string::npos) << log[0];
  for (const auto& change : {std::pair<std::string, std::string>{"needle", "observed"}, {"answer", "prefill"}}) {
    auto x = o;
    x.srh_span = change.first;
    x.first_step = change.second;
    x.max_trials = 0;
    const auto r = kvhost::calibrate(*model_, *tok_, stops_, id_, x);
    EXPECT_EQ(r.stages.at(0).reused, 0) << change.first << " " << change.second;
  }
  o.max_trials = 0;
  EXPECT_EQ(kvhost::calibrate(*model_, *tok_, stops_, id_, o).stages.at(0).reused, 1);
  // The earlier settings: no suffix, as older resume folders hold the keys.
  kvhost::calibration_options legacy;
  legacy.srh_span = "needle";
  legacy.first_step = "prefill";
  EXPECT_EQ(kvhost::calib::needle_settings_suffix(legacy, true), "");
  EXPECT_EQ(kvhost::calib::needle_settings_suffix(legacy, false), "");
  EXPECT_EQ(kvhost::calib::needle_settings_suffix(kvhost::calibration_options{}, false), "|first=observed");
  // Stage layers: pooling, kernel, where the error is measured and eps.
  EXPECT_EQ(kvhost::calib::layer_settings_suffix("max", 7, "attention", 1e-6), "");
  EXPECT_EQ(kvhost::calib::layer_settings_suffix("avg", 5, "o_proj", 1e-6), "|pool=avg5|at=o_proj|eps=9.9999999999999995e-07");
  EXPECT_NE(kvhost::calib::layer_settings_suffix("avg", 5, "attention", 1e-6),
            kvhost::calib::layer_settings_suffix("avg", 5, "o_proj", 1e-6));
  EXPECT_NE(kvhost::calib::layer_settings_suffix("max", 7, "attention", 1e-5), "");
  // Bad settings are refused before any trial.
  for (int i = 0; i < 5; ++i) {
    auto b = o;
    if (i == 0) b.srh_span = "sentence";
    if (i == 1) b.first_step = "late";
    if (i == 2) b.layer_pooling = "median";
    if (i == 3) b.layer_kernel = 4;
    if (i == 4) b.layer_error_at = "mlp";
    EXPECT_THROW(kvhost::calibrate(*model_, *tok_, stops_, id_, b), std::invalid_argument) << i;
  }
}

// Stage layers measured after o_proj (the default, as CompressKV's code) and before it: other
// errors, other keys (nothing reused across them), and the provenance says which.
TEST_F(CalibrateTest, LayerErrorAfterOProjIsAnOption) {
  const auto& full = full_run();
  ASSERT_TRUE(full.complete);
  auto o = tiny("oproj");
  o.stages = {"layers"};
  o.base = full.prof;
  const auto after = kvhost::calibrate(*model_, *tok_, stops_, id_, o);
  ASSERT_TRUE(after.complete);
  EXPECT_EQ(after.prof.layer_error, full.prof.layer_error);  // the default is o_proj
  const auto log = lines_of(fs::path(o.resume_dir) / "layers.jsonl");
  ASSERT_FALSE(log.empty());
  EXPECT_NE(log[0].find("|pool=avg5|at=o_proj|eps="), std::string::npos) << log[0];
  o.layer_error_at = "attention";
  const auto before = kvhost::calibrate(*model_, *tok_, stops_, id_, o);
  ASSERT_TRUE(before.complete);
  EXPECT_EQ(before.stages.at(0).reused, 0);
  EXPECT_NE(before.prof.layer_error, after.prof.layer_error);
  EXPECT_NE(after.prof.provenance.at("layer_error_settings").find("outputs compared after o_proj"), std::string::npos);
  EXPECT_NE(after.prof.provenance.at("layer_error_settings").find("pooling avg kernel 5"), std::string::npos);
  EXPECT_NE(before.prof.provenance.at("layer_error_settings").find("outputs compared before o_proj"),
            std::string::npos);
  // The stages kept from --profile say so, with that profile's date; the stage run does not.
  const std::string from = "not measured by this run: kept from the --profile of " + full.prof.provenance.at("date");
  EXPECT_EQ(after.prof.provenance.at("semantic_retrieval_from"), from);
  EXPECT_EQ(after.prof.provenance.at("retrieval_reasoning_from"), from);
  EXPECT_EQ(after.prof.provenance.count("layer_error_from"), 0u);
  EXPECT_EQ(full.prof.provenance.count("semantic_retrieval_from"), 0u);
}

// A resume line that is JSON but not a trial record: a clear error naming the file and line
// (was: silently treated as torn); a torn last line is cut before the next append.
TEST_F(CalibrateTest, WrongTypeRecordsAndTornLines) {
  auto o = tiny("types");
  o.stages = {"heads"};
  o.depths = 1;
  o.lengths = {256};
  o.max_trials = 0;
  fs::create_directories(o.resume_dir);
  const fs::path log = fs::path(o.resume_dir) / "heads.jsonl";
  std::ofstream(log, std::ios::binary) << "{\"key\": 5}\n";
  try {
    kvhost::calibrate(*model_, *tok_, stops_, id_, o);
    FAIL() << "a wrong-type record was accepted";
  } catch (const std::exception& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("heads.jsonl:1: not a calibration trial record"), std::string::npos) << msg;
  }
  std::ofstream(log, std::ios::binary | std::ios::trunc) << "{\"key\": \"heads|lemon";
  o.max_trials = 1;
  const auto r = kvhost::calibrate(*model_, *tok_, stops_, id_, o);
  EXPECT_EQ(r.stages.at(0).run, 1);
  const auto lines = lines_of(log);
  ASSERT_EQ(lines.size(), 1u);  // the torn fragment is gone, the new record on its own line
  EXPECT_NE(lines[0].find("\"key\""), std::string::npos) << lines[0];
  EXPECT_NO_THROW(kvtrim::json::parse(lines[0], "line"));
}

}  // namespace
