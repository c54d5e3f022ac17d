// Issue 15's library regressions: products of shape fields bounded before allocating (profile
// reader, importers, model_shape), layer weights that sum to infinity rejected at write and load
// naming the file, and `full` accepting prompts shorter than the window.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "expect_error.hpp"
#include "kvtrim/compose/method.hpp"
#include "kvtrim/profile/import.hpp"
#include "kvtrim/profile/profile.hpp"

namespace {

namespace fs = std::filesystem;

std::string profile_text(long long layers, long long q_heads, long long kv_heads, const std::string& extra = "") {
  return "{\"format\": \"kvtrim-profile\", \"version\": 1, \"model\": \"m\", \"shape\": {\"layers\": " +
         std::to_string(layers) + ", \"q_heads\": " + std::to_string(q_heads) + ", \"kv_heads\": " +
         std::to_string(kv_heads) + "}" + extra + "}";
}

TEST(FuzzRegressions, ProfileShapeProductIsBounded) {
  // Was: a 3 KB profile of shape 2^20 x 2^20 x 2^20 passed the reader; kvtrim budgets allocated for it.
  EXPECT_ERROR_HAS(kvtrim::profile_from_json(kvtrim::json::parse(profile_text(1 << 20, 1 << 20, 1 << 20)), "big.json"),
                   "big.json: shape layers x q_heads = 1048576 x 1048576 exceeds 1048576 heads");
  EXPECT_NO_THROW(kvtrim::profile_from_json(kvtrim::json::parse(profile_text(128, 128, 8))));
  kvtrim::profile p;
  p.layers = 4096;
  p.q_heads = 4096;
  p.kv_heads = 1;
  EXPECT_ERROR_HAS(p.validate(), "layers x q_heads = 4096 x 4096 exceeds");
  const kvtrim::model_shape s{100000, 100000, 1, 64, 0};
  EXPECT_ERROR_HAS(s.validate(), "model_shape: layers x q_heads = 100000 x 100000 exceeds");
  kvtrim::method_spec c;
  c.name = "snapkv";
  EXPECT_ERROR_HAS(kvtrim::make_method(c, s), "exceeds");
}

TEST(FuzzRegressions, ImportChecksTheShapeBeforeAllocating) {
  // Was: --layers 100000 --q-heads 100000 allocated ~80 GB before the file was looked at.
  EXPECT_ERROR_HAS(kvtrim::parse_compresskv_head_idx("{}", 100000, 100000, "h.json"),
                   "layers x q_heads = 100000 x 100000 exceeds");
  EXPECT_ERROR_HAS(kvtrim::parse_head_trial_scores("{}", 100000, 100000, "s.json"), "exceeds");
  kvtrim::import_sources src;
  src.headkv_scores = "/nonexistent";
  EXPECT_ERROR_HAS(kvtrim::import_profile(src, 100000, 100000, 1), "exceeds");
  // A layer key out of range: rejected before the score table is allocated.
  EXPECT_ERROR_HAS(kvtrim::parse_compresskv_head_idx(R"({"0": [0], "1": [0], "2": [0]})", 2, 1, "h.json"),
                   "h.json: layer key \"2\" must be a layer id in [0, 2)");
}

TEST(FuzzRegressions, LayerWeightsSummingToInfinityAreRejectedNamingTheFile) {
  const std::string text = profile_text(2, 1, 1, ", \"layer_error\": [1.5e308, 1.5e308]");
  EXPECT_ERROR_HAS(kvtrim::profile_from_json(kvtrim::json::parse(text), "inf.json"),
                   "inf.json: profile: layer_error sums to infinity");
  kvtrim::profile p;
  p.model = "m";
  p.layers = 2;
  p.q_heads = 1;
  p.kv_heads = 1;
  p.layer_error = {1.5e308, 1.5e308};
  const std::string out = (fs::temp_directory_path() / ("kvtrim_inf_" + std::to_string(::getpid()) + ".json")).string();
  EXPECT_ERROR_HAS(kvtrim::save_profile(p, out), "not writing " + out + ": profile: layer_error sums to infinity");
  EXPECT_FALSE(fs::exists(out));
  EXPECT_ERROR_HAS(kvtrim::parse_compresskv_layer_score(R"({"avg_score": [1.5e308, 1.5e308]})", 2, "ls.jsonl"),
                   "ls.jsonl: avg_score sums to infinity");
}

// Temp files of a writer that crashed (its pid no longer runs) are removed by the next write;
// a live writer's (this process's) and unrelated files are left alone.
TEST(FuzzRegressions, StaleTempFilesAreCleanedUp) {
  const fs::path dir = fs::temp_directory_path() / ("kvtrim_stale_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string out = (dir / "p.json").string();
  std::ofstream(out + ".tmp.999999999.0") << "crashed";
  std::ofstream(out + ".tmp." + std::to_string(::getpid()) + ".77") << "live";
  std::ofstream(out + ".tmp.notes") << "unrelated";
  kvtrim::write_text_file_atomic(out, "{}\n");
  EXPECT_FALSE(fs::exists(out + ".tmp.999999999.0"));
  EXPECT_TRUE(fs::exists(out + ".tmp." + std::to_string(::getpid()) + ".77"));
  EXPECT_TRUE(fs::exists(out + ".tmp.notes"));
  EXPECT_TRUE(fs::exists(out));
  fs::remove_all(dir);
}

TEST(FuzzRegressions, FullKeepsPromptsShorterThanTheWindow) {
  kvtrim::method_spec c;
  c.name = "full";
  c.window = 8;
  const kvtrim::model_shape shape{2, 4, 2, 4, 0};
  const kvtrim::method m = kvtrim::make_method(c, shape);
  auto seq = m.begin(3);  // was: "window 8 is larger than the prompt (3 tokens)"
  EXPECT_EQ(seq->window(), 3);
  std::vector<float> k(2 * 3 * 4, 1.0f), v = k, q(4 * 3 * 4, 0.5f);
  kvtrim::layer_kv<float> kv;
  kv.keys = kvtrim::view3<float>::head_major(k.data(), 2, 3, 4);
  kv.values = kvtrim::view3<float>::head_major(v.data(), 2, 3, 4);
  kv.queries = kvtrim::view3<const float>::head_major(q.data(), 4, 3, 4);
  for (int l = 0; l < 2; ++l) EXPECT_EQ(seq->compress_layer(l, kv), (std::vector<kvtrim::index_t>{3, 3}));
  c.name = "snapkv";
  c.target = kvtrim::budget::tokens(2);
  EXPECT_ERROR_HAS(kvtrim::make_method(c, shape).begin(3), "window 8 is larger than the prompt (3 tokens)");
}

}  // namespace
