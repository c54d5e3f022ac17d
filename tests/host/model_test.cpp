// Model, kv_store and decode attention of the reference host. The model tests run the default
// model (loaded once per process) on short prompts.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/model.hpp"

namespace {

using kvhost::kv_store;
using kvhost::model;

// "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging
// Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
// as SmolLM2's tokenizer encodes it (special tokens parsed; checked against llama.cpp's).
const std::vector<int32_t> k_france{1,    9690, 198, 2683, 359,  253,  5356, 5646, 11173, 3365, 3511, 308, 34519,
                                    28,   7018, 411, 407,  19712, 8182, 2,   198,  1,     4093, 198,  1780, 314,
                                    260,  3575, 282, 4649, 47,   2,    198,  1,   520,   9531, 198};

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  float d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, std::fabs(a[i] - b[i]));
  return d;
}

int64_t round_up16(int64_t n) { return (n + 15) / 16 * 16; }

class ModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const auto path = kvhost::default_model_path();
    if (!std::filesystem::exists(path)) {
      missing_ = "model not found at " + path + ": run scripts/fetch_model.sh (or set KVTRIM_MODEL)";
      return;
    }
    file_ = std::make_unique<kvhost::gguf_file>(path);
    model_ = std::make_unique<model>(*file_);
  }
  void SetUp() override { ASSERT_TRUE(model_) << missing_; }

  static const model& m() { return *model_; }
  static const kvhost::gguf_file& file() { return *file_; }

  inline static std::unique_ptr<kvhost::gguf_file> file_;
  inline static std::unique_ptr<model> model_;
  inline static std::string missing_;
};

TEST_F(ModelTest, ConfigOfTheDefaultModel) {
  const auto& c = m().config();
  EXPECT_EQ(c.architecture, "llama");
  EXPECT_EQ(c.n_layer, 30);
  EXPECT_EQ(c.n_embd, 576);
  EXPECT_EQ(c.n_ff, 1536);
  EXPECT_EQ(c.n_head, 9);
  EXPECT_EQ(c.n_kv_head, 3);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.group(), 3);
  EXPECT_EQ(c.n_ctx, 8192);
  EXPECT_EQ(c.n_vocab, 49152);
  EXPECT_DOUBLE_EQ(c.rope_base, 100000.0);
  const auto stops = kvhost::default_stop_tokens(file());
  EXPECT_NE(std::find(stops.begin(), stops.end(), 2), stops.end());  // <|im_end|>
  EXPECT_NE(std::find(stops.begin(), stops.end(), 0), stops.end());  // <|endoftext|>
}

TEST_F(ModelTest, AnswersTheFranceQuestion) {
  kv_store cache;
  const auto r = m().generate(k_france, cache, 16, kvhost::default_stop_tokens(file()));
  std::string text;
  const auto vocab = file().get_string_array("tokenizer.ggml.tokens");
  for (int32_t t : r.tokens) text += vocab[static_cast<size_t>(t)];
  EXPECT_NE(text.find("Paris"), std::string::npos) << text;
  EXPECT_TRUE(r.stopped) << text;
  EXPECT_GT(r.decode_tokens_per_second, 0);
  EXPECT_EQ(cache.n_past(), static_cast<int64_t>(k_france.size()) + r.decode_steps);
  EXPECT_GT(kvhost::peak_rss_bytes(), 0u);
  EXPECT_GE(kvhost::peak_rss_bytes(), kvhost::current_rss_bytes());
}

TEST_F(ModelTest, RejectsBadPromptsAndTokens) {
  kv_store cache;
  const auto expect_invalid = [&](const std::vector<int32_t>& toks, const std::string& needle,
                                  const kvhost::prefill_hook& hook = {}, int window = 8) {
    try {
      m().prefill(toks, cache, hook, window);
      ADD_FAILURE() << "accepted: " << needle;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
    EXPECT_EQ(cache.retained_tokens(), 0);
  };
  expect_invalid({}, "empty prompt");
  expect_invalid(std::vector<int32_t>(8193, 0), "prompt of 8193 tokens exceeds the model context of 8192");
  expect_invalid({1, -1}, "token id -1 outside the vocabulary [0, 49152)");
  expect_invalid({1, 49152}, "token id 49152");
  const kvhost::prefill_hook keep_all = [](int, float*, float*, const float*, int64_t n, int64_t) {
    return std::vector<int64_t>(3, n);
  };
  expect_invalid({1, 2, 3}, "window 4 outside [1, 3]", keep_all, 4);
  expect_invalid({1, 2, 3}, "window 0 outside [1, 3]", keep_all, 0);
  const kvhost::prefill_hook two_heads = [](int, float*, float*, const float*, int64_t n, int64_t) {
    return std::vector<int64_t>(2, n);
  };
  expect_invalid({1, 2, 3}, "hook returned 2 lengths for layer 0, expected 3", two_heads, 2);
  const kvhost::prefill_hook too_long = [](int layer, float*, float*, const float*, int64_t n, int64_t) {
    return std::vector<int64_t>{n, layer == 5 ? n + 1 : n, n};
  };
  expect_invalid({1, 2, 3}, "hook kept 4 rows of layer 5 KV head 1, outside [0, 3]", too_long, 2);

  kv_store fresh;
  EXPECT_THROW(m().decode_step(1, fresh), std::invalid_argument);  // shape does not match
  m().prefill({1, 2, 3}, cache);
  EXPECT_THROW(m().decode_step(49152, cache), std::invalid_argument);
  cache.set_n_past(m().config().n_ctx);
  try {
    m().decode_step(1, cache);
    ADD_FAILURE() << "decoded past the context";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("past the model context of 8192"), std::string::npos) << e.what();
  }
}

TEST_F(ModelTest, KeepAllHookIsBitIdenticalToNoHook) {
  const auto& c = m().config();
  kv_store plain, hooked;
  const auto a = m().prefill(k_france, plain);
  std::vector<int> layers_seen;
  std::vector<float> k0;
  const auto n = static_cast<int64_t>(k_france.size());
  const auto b = m().prefill(
      k_france, hooked,
      [&](int layer, float* k, float*, const float* q_window, int64_t n_rows, int64_t window) {
        layers_seen.push_back(layer);
        EXPECT_EQ(n_rows, n);
        EXPECT_EQ(window, 5);
        EXPECT_TRUE(std::isfinite(q_window[c.n_head * window * c.head_dim - 1]));
        if (layer == 0) k0.assign(k, k + c.n_kv_head * n_rows * c.head_dim);
        return std::vector<int64_t>(static_cast<size_t>(c.n_kv_head), n_rows);
      },
      5);
  EXPECT_EQ(a.logits, b.logits);
  EXPECT_EQ(static_cast<int>(layers_seen.size()), c.n_layer);
  EXPECT_TRUE(std::is_sorted(layers_seen.begin(), layers_seen.end()));
  EXPECT_GE(b.hook_seconds, 0);
  EXPECT_LE(b.hook_seconds, b.seconds);
  // The store holds exactly the rows the hook saw, per head.
  for (int g = 0; g < c.n_kv_head; ++g)
    EXPECT_EQ(std::memcmp(hooked.k(0, g), k0.data() + g * n * c.head_dim, sizeof(float) * n * c.head_dim), 0);
  EXPECT_EQ(hooked.retained_tokens(), int64_t{c.n_layer} * c.n_kv_head * n);
  EXPECT_EQ(m().decode_step(504, plain), m().decode_step(504, hooked));
}

TEST_F(ModelTest, DecodeStepsEqualPrefillOfTheLongerPrompt) {
  const std::vector<int32_t> prompt(k_france.begin(), k_france.begin() + 24);
  const int32_t t1 = k_france[24], t2 = 7018;
  kv_store cache;
  m().prefill(prompt, cache);
  const auto d1 = m().decode_step(t1, cache);
  const auto d2 = m().decode_step(t2, cache);
  EXPECT_EQ(cache.n_past(), 26);
  EXPECT_EQ(cache.length(29, 2), 26);

  auto longer = prompt;
  longer.push_back(t1);
  kv_store ref;
  EXPECT_LT(max_abs_diff(d1, m().prefill(longer, ref).logits), 1e-4f);
  longer.push_back(t2);
  EXPECT_LT(max_abs_diff(d2, m().prefill(longer, ref).logits), 1e-4f);
}

// llama.cpp on the same weights dequantised to F32 (tests/golden, scripts/oracle): prompt logits
// and three decode steps agree to float rounding.
TEST_F(ModelTest, MatchesLlamaCppGoldenLogits) {
  const std::string dir = std::string(KVTRIM_SOURCE_DIR) + "/tests/golden/";
  std::ifstream in(dir + "llamacpp_golden.json");
  ASSERT_TRUE(in) << "missing " << dir << "llamacpp_golden.json (scripts/oracle/golden.py writes it)";
  const auto golden = nlohmann::json::parse(in);
  const nlohmann::json* prompt = nullptr;
  for (const auto& p : golden.at("prompts"))
    if (p.at("id") == "chat_short") prompt = &p;
  ASSERT_NE(prompt, nullptr);
  const auto& ref = prompt->at("variants").at("dequant_f32");
  std::ifstream bin(dir + ref.at("prompt_logits").at("file").get<std::string>(), std::ios::binary);
  std::vector<float> want(static_cast<size_t>(m().config().n_vocab));
  ASSERT_TRUE(bin.read(reinterpret_cast<char*>(want.data()), static_cast<std::streamsize>(want.size() * sizeof(float))));

  kv_store cache;
  EXPECT_LT(max_abs_diff(m().prefill(prompt->at("tokens").get<std::vector<int32_t>>(), cache).logits, want), 1e-3f);
  for (const auto& step : ref.at("steps")) {
    const auto logits = m().decode_step(step.at("input_token").get<int32_t>(), cache);
    const auto ids = step.at("topk_ids").get<std::vector<int32_t>>();
    const auto values = step.at("topk_logits").get<std::vector<float>>();
    for (size_t i = 0; i < ids.size(); ++i)
      EXPECT_NEAR(logits[static_cast<size_t>(ids[i])], values[i], 1e-3f) << "step " << step.at("step") << " id " << ids[i];
    EXPECT_EQ(std::max_element(logits.begin(), logits.end()) - logits.begin(), step.at("argmax").get<int64_t>());
  }
}

// A StreamingLLM-style hook: each head keeps 4 sink rows and its last `recent` rows (a different
// count per head), compacted in place.
TEST_F(ModelTest, CompressingHookShrinksTheCacheAndPositionsContinue) {
  const auto& c = m().config();
  const int64_t n = static_cast<int64_t>(k_france.size()), hd = c.head_dim;
  const auto recent = [](int layer, int g) { return int64_t{5} + layer % 4 + 3 * g; };
  std::vector<float> kept_row;  // layer 7, head 1: the first recent row after compaction
  const kvhost::prefill_hook hook = [&](int layer, float* k, float* v, const float*, int64_t rows, int64_t) {
    std::vector<int64_t> lens;
    for (int g = 0; g < c.n_kv_head; ++g) {
      const int64_t r = recent(layer, g);
      float *kh = k + g * rows * hd, *vh = v + g * rows * hd;
      std::memmove(kh + 4 * hd, kh + (rows - r) * hd, sizeof(float) * r * hd);
      std::memmove(vh + 4 * hd, vh + (rows - r) * hd, sizeof(float) * r * hd);
      if (layer == 7 && g == 1) kept_row.assign(kh + 4 * hd, kh + 5 * hd);
      lens.push_back(4 + r);
    }
    return lens;
  };
  kv_store cache;
  m().prefill(k_france, cache, hook);
  EXPECT_EQ(cache.n_past(), n);  // positions continue from the uncompressed length
  size_t want_alloc = 0, want_retained = 0;
  for (int l = 0; l < c.n_layer; ++l)
    for (int g = 0; g < c.n_kv_head; ++g) {
      const int64_t len = 4 + recent(l, g);
      ASSERT_EQ(cache.length(l, g), len);
      EXPECT_EQ(cache.capacity(l, g), round_up16(len));
      want_alloc += static_cast<size_t>(round_up16(len)) * cache.bytes_per_row();
      want_retained += static_cast<size_t>(len) * cache.bytes_per_row();
    }
  EXPECT_EQ(cache.bytes_per_row(), static_cast<size_t>(hd) * 2 * sizeof(float));
  EXPECT_EQ(cache.allocated_bytes(), want_alloc);
  EXPECT_EQ(cache.retained_bytes(), want_retained);
  EXPECT_EQ(std::memcmp(cache.k(7, 1) + 4 * hd, kept_row.data(), sizeof(float) * hd), 0);

  // Layer 0's K row depends only on the token and its position: the row decode appends after the
  // compressed prompt must equal the last row of an uncompressed prefill of prompt + token.
  const auto logits = m().decode_step(504, cache);
  for (float x : logits) ASSERT_TRUE(std::isfinite(x));
  EXPECT_EQ(cache.length(0, 0), 4 + recent(0, 0) + 1);
  auto longer = k_france;
  longer.push_back(504);
  kv_store ref;
  m().prefill(longer, ref);
  for (int g = 0; g < c.n_kv_head; ++g)
    for (int64_t i = 0; i < hd; ++i)
      EXPECT_NEAR(cache.k(0, g)[(cache.length(0, g) - 1) * hd + i], ref.k(0, g)[n * hd + i], 1e-5f) << g << " " << i;
}

// ---- kv_store --------------------------------------------------------------------------------

TEST(KvStore, AllocatesInGranulesAndShrinkReleases) {
  kv_store s(2, 3, 4);
  EXPECT_EQ(s.bytes_per_row(), 4u * 2 * sizeof(float));
  std::vector<float> rows(100 * 4);
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = static_cast<float>(i);
  for (int g = 0; g < 3; ++g) s.assign(0, g, rows.data(), rows.data(), 100);
  s.assign(1, 0, rows.data(), rows.data(), 16);
  EXPECT_EQ(s.capacity(0, 0), 112);
  EXPECT_EQ(s.capacity(1, 0), 16);
  EXPECT_EQ(s.capacity(1, 1), 0);
  EXPECT_EQ(s.k(1, 1), nullptr);
  EXPECT_EQ(s.retained_tokens(), 316);

  s.append(1, 0, rows.data() + 4, rows.data() + 8);  // full: grows by one granule
  EXPECT_EQ(s.capacity(1, 0), 32);
  EXPECT_EQ(s.length(1, 0), 17);
  EXPECT_EQ(s.k(1, 0)[16 * 4], 4.f);
  EXPECT_EQ(s.v(1, 0)[16 * 4], 8.f);
  EXPECT_EQ(s.k(1, 0)[15 * 4 + 3], 63.f);  // earlier rows survive the reallocation

  s.shrink(0, {1, 40, 0});
  EXPECT_EQ(s.lengths(0), (std::vector<int64_t>{1, 40, 0}));
  EXPECT_EQ(s.capacity(0, 0), 16);
  EXPECT_EQ(s.capacity(0, 1), 48);
  EXPECT_EQ(s.capacity(0, 2), 0);
  EXPECT_EQ(s.k(0, 1)[39 * 4 + 3], 159.f);
  EXPECT_EQ(s.retained_bytes(), static_cast<size_t>(1 + 40 + 17) * s.bytes_per_row());
  EXPECT_EQ(s.allocated_bytes(), static_cast<size_t>(16 + 48 + 32) * s.bytes_per_row());
  // Within one granule per head of the retained bytes.
  EXPECT_LT(s.allocated_bytes() - s.retained_bytes(), 6 * kv_store::granule * s.bytes_per_row());

  s.clear();
  EXPECT_EQ(s.allocated_bytes(), 0u);
  EXPECT_EQ(s.n_kv_head(), 3);
}

TEST(KvStore, ShrinkRejectsBadLengthsAndChangesNothing) {
  kv_store s(1, 2, 2);
  const std::vector<float> rows(20 * 2, 1.f);
  s.assign(0, 0, rows.data(), rows.data(), 20);
  s.assign(0, 1, rows.data(), rows.data(), 10);
  EXPECT_THROW(s.shrink(0, {5}), std::invalid_argument);
  try {
    s.shrink(0, {5, 11});
    FAIL() << "grew a head";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("length 11 for layer 0 head 1 outside [0, 10]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(s.shrink(0, {-1, 0}), std::invalid_argument);
  EXPECT_EQ(s.lengths(0), (std::vector<int64_t>{20, 10}));
  EXPECT_EQ(s.capacity(0, 0), 32);
  EXPECT_THROW(s.shrink(1, {0, 0}), std::out_of_range);
  EXPECT_THROW(s.length(0, 2), std::out_of_range);
}

// ---- decode attention ------------------------------------------------------------------------

}  // namespace

namespace {
// The inputs a hook made with_extras asks for (h2o, expected_attention): each query's softmax sums
// to 1, so a head's column sums add up to n, and the last key is seen by the last query alone; the
// pre-RoPE queries, rotated by the host's RoPE, are the window's queries.
TEST_F(ModelTest, PrefillExtrasAreTheAttentionColumnSumsAndThePreRopeQueries) {
  const auto& c = m().config();
  std::vector<int32_t> prompt;
  for (int i = 0; i < 300; ++i) prompt.push_back(static_cast<int32_t>(1000 + (i * 37) % 5000));
  const int64_t n = static_cast<int64_t>(prompt.size());
  const int w = 4;
  int layers_seen = 0;
  const auto fn = [&](int, float*, float*, const float* qw, int64_t len, int64_t win,
                      const kvhost::layer_extras& e) {
    ++layers_seen;
    EXPECT_EQ(len, n);
    EXPECT_NE(e.wo, nullptr);
    EXPECT_EQ(e.wo_rows, c.n_embd);
    if (!e.attention_sums || !e.prompt_queries) {
      ADD_FAILURE() << "extras missing";
      return std::vector<int64_t>(static_cast<size_t>(c.n_kv_head), len);
    }
    for (int h = 0; h < c.n_head; ++h) {
      double total = 0;
      for (int64_t j = 0; j < len; ++j) total += e.attention_sums[h * len + j];
      EXPECT_NEAR(total, static_cast<double>(len), 1e-3 * static_cast<double>(len)) << "head " << h;
      EXPECT_GT(e.attention_sums[h * len + len - 1], 0.f);
      EXPECT_LE(e.attention_sums[h * len + len - 1], 1.f + 1e-5f);
    }
    // Rotate the pre-RoPE query of the last position (pairs (i, i + d/2)) and compare.
    const int hd = c.head_dim, half = hd / 2;
    for (int h = 0; h < c.n_head; ++h) {
      const float* pre = e.prompt_queries + (len - 1) * e.q_stride + h * hd;
      const float* post = qw + (static_cast<int64_t>(h) * win + win - 1) * hd;
      for (int i = 0; i < half; ++i) {
        const double a = static_cast<double>(len - 1) * e.inv_freq[i];
        const double x0 = pre[i], x1 = pre[i + half];
        EXPECT_NEAR(x0 * std::cos(a) - x1 * std::sin(a), post[i], 1e-3 * (1 + std::abs(post[i])));
        EXPECT_NEAR(x1 * std::cos(a) + x0 * std::sin(a), post[i + half], 1e-3 * (1 + std::abs(post[i + half])));
      }
    }
    return std::vector<int64_t>(static_cast<size_t>(c.n_kv_head), len);
  };
  kv_store cache;
  const kvhost::prefill_hook hook = kvhost::prefill_hook::with_extras(fn, true, true);
  EXPECT_TRUE(hook.wants_attention_sums() && hook.wants_prompt_queries());
  m().prefill(prompt, cache, hook, w);
  EXPECT_EQ(layers_seen, c.n_layer);
}
}  // namespace
