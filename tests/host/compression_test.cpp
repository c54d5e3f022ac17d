// kvtrim inside the host's prefill, end to end on the real model: every method on a ~2k-token
// needle prompt, `full` identical to no kvtrim, re-rotated keys, and the memory really released.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "default_model.hpp"
#include "engine/compression.hpp"
#include "engine/gguf.hpp"
#include "engine/haystack.hpp"
#include "engine/needle.hpp"
#include "engine/kv_store.hpp"
#include "engine/model.hpp"
#include "engine/runner.hpp"
#include "engine/tokenizer.hpp"
#include "eval/eval_runner.hpp"
#include "kvtrim/compose/method.hpp"
#include "kvtrim/profile/profile.hpp"

namespace {

const std::string kProfile = std::string(KVTRIM_SOURCE_DIR) + "/profiles/smollm2-135m-instruct.json";
const std::string kEssays = std::string(KVTRIM_SOURCE_DIR) + "/../shared/data/pg_essays";

class Compression : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const auto& d = kvtest::load_default_model();
    model_ = d.mdl.get();
    tok_ = d.tok.get();
    stops_ = d.stops;
    if (std::ifstream(kProfile)) prof_ = std::make_unique<kvtrim::profile>(kvtrim::load_profile(kProfile));
  }
  void SetUp() override {
    ASSERT_TRUE(model_) << kvtest::kMissingModel;
    ASSERT_TRUE(prof_) << "missing " << kProfile;
  }
  static kvtrim::method make(const std::string& name, kvtrim::index_t budget, bool rerotate = false) {
    kvtrim::method_spec cfg;
    cfg.name = name;
    cfg.rerotate_keys = rerotate;
    cfg.target = kvtrim::budget::tokens(budget);
    cfg.prof = prof_.get();
    return kvtrim::make_method(cfg, kvhost::kvtrim_shape(model_->config()));
  }
  static const kvhost::model_config& c() { return model_->config(); }
  inline static const kvhost::model* model_ = nullptr;
  inline static const kvhost::tokenizer* tok_ = nullptr;
  inline static std::unique_ptr<kvtrim::profile> prof_;
  inline static std::vector<int32_t> stops_;
};

// The needle sits at the end of a ~2k-token document; at B = 256 (12.8% of the prompt) every
// scoring method must keep it, and StreamingLLM's recent window covers it. Random keeps each
// token with p = 12.8%, so it is held to the byte count only (and knorm, below). One prefill
// serves every method (the eval runner's capture; EvalModel.OnePrefillEqualsSeparateRuns shows
// it gives what each method's own compressed prefill gives, row for row).
TEST_F(Compression, EveryMethodAnswersTheNeedleAtEqualBytes) {
  const kvhost::needle nd = kvhost::classic_needle();
  const kvhost::needle_prompt p =
      kvhost::build_needle_prompt(*tok_, kvhost::load_text_dir(kEssays), 2000, 1.0, nd);
  const auto& c = model_->config();
  const size_t row = static_cast<size_t>(c.head_dim) * 2 * sizeof(float);
  const size_t per_token = static_cast<size_t>(c.n_layer) * static_cast<size_t>(c.n_kv_head) * row;
  const kvhost::run_report full = kvhost::run_generation(*model_, *tok_, p.tokens, nullptr, 16, stops_);
  EXPECT_GE(kvhost::rouge1_recall(full.answer, nd.answer), 0.99) << full.answer;
  const kvhost::prefill_capture cap = kvhost::capture_prefill(*model_, p.tokens, 8, true, true);
  std::vector<std::pair<std::string, bool>> runs;  // (method, re-rotated keys)
  for (const std::string& name : kvtrim::method_names()) runs.emplace_back(name, false);
  for (const char* name : {"snapkv", "compresskv"}) runs.emplace_back(name, true);
  for (const auto& [name, rerotate] : runs) {
    const kvtrim::method m = make(name, 256, rerotate);
    const kvhost::config_run r = kvhost::run_config(*model_, cap, &m, 16, stops_);
    const std::string answer = tok_->decode(std::vector<int>(r.tokens.begin(), r.tokens.end()), true);
    const double recall = kvhost::rouge1_recall(answer, nd.answer);
    const std::string label = name + (rerotate ? "+rerotate" : "");
    std::printf("%-20s recall %.2f  KV %.2f%% of full  kvtrim %.3f s  answer:%s\n", label.c_str(), recall,
                r.kv_percent_of_full, r.kvtrim_s, answer.c_str());
    if (name == "full") {
      EXPECT_EQ(r.kv_bytes, full.kv_bytes);
      EXPECT_EQ(r.tokens, full.tokens);
      continue;
    }
    EXPECT_EQ(r.kv_bytes, 256 * per_token) << label << ": equal bytes at equal B";
    // Survival of the needle, not eloquence: the answer names the sandwich and the park (builds
    // that round differently have seen PyramidKV and Ada-KV stop at "sit in a park": 0.67).
    // knorm ranks keys by their norm alone, without the question: measured here it keeps "to
    // eat" and loses the rest (recall 0.25), so like random it is held to the byte count only.
    // Measured 2026-12-02: criticalkv 1.00, h2o 0.67 ("sit in a park"), expected_attention 0.67
    // ("sit in Dolores Park").
    if (name != "random" && name != "knorm") {
      EXPECT_GE(recall, 0.6) << label << ": " << answer;
      EXPECT_NE(answer.find("sandwich"), std::string::npos) << label << ": " << answer;
      EXPECT_NE(answer.find("ark"), std::string::npos) << label << ": " << answer;
    }
  }
}

// Re-rotated keys in the host's store: the same rows as without re-rotation (values bit for
// bit), and each key the plain key turned by the host's own RoPE from its token's position to
// its row's, n - len + row (model::rope at that minus the token's); a budget >= the prompt
// changes nothing.
TEST_F(Compression, RerotatedKeysAreTheHostsRopeAtTheirNewRows) {
  const std::vector<int> ids = tok_->encode(kvhost::load_text_dir(kEssays).substr(0, 3000), false);
  const std::vector<int32_t> prompt(ids.begin(), ids.begin() + 400);
  const kvhost::prefill_capture cap = kvhost::capture_prefill(*model_, prompt, 8);
  for (const std::string name : {"snapkv", "adakv", "cake"}) {
    const kvtrim::method plain_m = make(name, 32), rr_m = make(name, 32, true);
    kvhost::kv_store plain, rr;
    kvhost::build_cache(cap, &plain_m, plain);
    kvhost::build_cache(cap, &rr_m, rr);
    const int64_t d = c().head_dim;
    int moved = 0;
    for (int l = 0; l < c().n_layer; ++l)
      for (int g = 0; g < c().n_kv_head; ++g) {
        ASSERT_EQ(rr.length(l, g), plain.length(l, g)) << name;
        for (int64_t i = 0; i < plain.length(l, g); ++i) {
          const float* v = plain.v(l, g) + i * d;
          ASSERT_EQ(std::memcmp(v, rr.v(l, g) + i * d, size_t(d) * sizeof(float)), 0) << name;
          // The prompt token of row i: the one whose (position-rotated, so unique) plain key the
          // row holds; V alone is ambiguous in layer 0, where a repeated token repeats its V.
          const float* k = plain.k(l, g) + i * d;
          int64_t t = i;
          while (t < cap.n && std::memcmp(cap.k[size_t(l)].data() + (g * cap.n + t) * d, k, size_t(d) * sizeof(float)))
            ++t;
          ASSERT_LT(t, cap.n) << name;
          const int64_t pos = cap.n - plain.length(l, g) + i;  // packed up to the prompt's end
          std::vector<float> want(k, k + d);
          model_->rope(want.data(), 1, pos - t);
          moved += t != pos;
          for (int64_t j = 0; j < d; ++j)
            ASSERT_NEAR(rr.k(l, g)[i * d + j], want[size_t(j)], 1e-4f * (1.f + std::abs(want[size_t(j)])))
                << name << " layer " << l << " head " << g << " row " << i << " dim " << j;
        }
      }
    EXPECT_GT(moved, 0) << name;
  }
  kvhost::kv_store plain, rr;
  kvhost::build_cache(cap, nullptr, plain);
  const kvtrim::method all = make("snapkv", 4096, true);
  kvhost::build_cache(cap, &all, rr);
  for (int l = 0; l < c().n_layer; ++l)
    for (int g = 0; g < c().n_kv_head; ++g)
      EXPECT_EQ(std::memcmp(rr.k(l, g), plain.k(l, g), size_t(cap.n * c().head_dim) * sizeof(float)), 0);
}

// `full` through kvtrim and a budget >= the prompt are the host without kvtrim, bit for bit.
TEST_F(Compression, FullAndLargeBudgetsAreIdenticalToNoKvtrim) {
  const std::vector<int> ids = tok_->encode(
      tok_->apply_chat_template({{"user", "List three facts about the Moon, with numbers."}}, true), true);
  const std::vector<int32_t> prompt(ids.begin(), ids.end());
  kvhost::kv_store plain;
  const auto want = model_->prefill(prompt, plain).logits;
  for (const auto& [name, budget] : std::vector<std::pair<std::string, kvtrim::index_t>>{
           {"full", 1}, {"snapkv", 4096}, {"compresskv", 4096}, {"cake", 4096}}) {
    const kvtrim::method m = make(name, budget);
    kvhost::kv_store cache(c().n_layer, c().n_kv_head, c().head_dim);
    kvhost::compression_session s(m, cache, static_cast<int64_t>(prompt.size()));
    const auto got = model_->prefill(prompt, cache, s.hook(), s.window()).logits;
    EXPECT_EQ(got, want) << name;
    EXPECT_EQ(cache.retained_bytes(), plain.retained_bytes()) << name;
  }
}

// After compression the store holds retained tokens x bytes per token, within one 16-token
// allocation granule per head, and decode appends from there.
TEST_F(Compression, MemoryIsReleased) {
  const std::vector<int> ids = tok_->encode(kvhost::load_text_dir(kEssays).substr(0, 6000), false);
  const std::vector<int32_t> prompt(ids.begin(), ids.begin() + 1000);
  for (const std::string name : {"snapkv", "pyramidkv", "adakv", "headkv", "cake"}) {
    const kvtrim::method m = make(name, 40);
    kvhost::kv_store cache(c().n_layer, c().n_kv_head, c().head_dim);
    kvhost::compression_session s(m, cache, 1000);
    model_->prefill(prompt, cache, s.hook(), s.window());
    const size_t row = cache.bytes_per_row();
    EXPECT_EQ(cache.retained_bytes(), 40u * 30u * 3u * row) << name;
    EXPECT_GE(cache.allocated_bytes(), cache.retained_bytes());
    EXPECT_LE(cache.allocated_bytes(), cache.retained_bytes() + 30u * 3u * 15u * row) << name;
    EXPECT_EQ(cache.n_past(), 1000);
    model_->decode_step(prompt[0], cache);
    EXPECT_EQ(cache.retained_bytes(), 41u * 30u * 3u * row) << name;
  }
}

}  // namespace
