// Decode-time compression on the real model (engine/compression.hpp decode_session): a generation
// far longer than the target keeps every head, and the store's allocated bytes, bounded at every
// step; with a target no head reaches it is token-for-token plain decoding.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "default_model.hpp"
#include "engine/compression.hpp"
#include "engine/kv_store.hpp"
#include "engine/model.hpp"
#include "engine/runner.hpp"
#include "engine/tokenizer.hpp"
#include "kvtrim/compose/method.hpp"
#include "kvtrim/decode/decode_compressor.hpp"

namespace {

const char* kText =
    "The committee met on Tuesday to review the harbour plans. The engineers said the old pier would "
    "need new pilings before winter, and the budget had no room for a second crane. After a long "
    "discussion about tides, shipping schedules and the fishing fleet, they agreed to ask the city for "
    "a loan. Write a long story about what happened next at the harbour.";

class DecodeCompression : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto& d = kvtest::load_default_model();
    ASSERT_TRUE(d.mdl) << kvtest::kMissingModel;
    mdl = d.mdl.get();
    tok = d.tok.get();
    const std::vector<int> ids = tok->encode(tok->apply_chat_template({{"user", kText}}, true), true);
    prompt.assign(ids.begin(), ids.end());
  }
  kvtrim::method make(const std::string& name, kvtrim::index_t budget) const {
    kvtrim::method_spec spec;
    spec.name = name;
    spec.target = kvtrim::budget::tokens(budget);
    return kvtrim::make_method(spec, kvhost::kvtrim_shape(mdl->config()));
  }
  const kvhost::model* mdl = nullptr;
  const kvhost::tokenizer* tok = nullptr;
  std::vector<int32_t> prompt;
};

// snapkv at B = 32 in prefill, then 64 decode steps kept at 32 per head every 8 steps: after each
// step's compressions no head holds more than target + interval rows, and the store never holds
// more than every head at target + interval + 1 rows in allocation granules.
TEST_F(DecodeCompression, AllocatedBytesStayBoundedAtEveryStep) {
  const kvhost::model_config& c = mdl->config();
  const int64_t T = 32, K = 8, steps = 64;
  ASSERT_GT(static_cast<int64_t>(prompt.size()), T);
  const kvtrim::method m = make("snapkv", T);
  const kvtrim::decode_compressor dc(m, {T, K});
  kvhost::kv_store cache(c.n_layer, c.n_kv_head, c.head_dim);
  kvhost::compression_session prefill(m, cache, static_cast<int64_t>(prompt.size()));
  kvhost::decode_session dec(dc, cache);
  const kvhost::prefill_result pre = mdl->prefill(prompt, cache, dec.wrap(prefill.hook()), prefill.window());
  const int64_t granules = (T + K + 1 + kvhost::kv_store::granule - 1) / kvhost::kv_store::granule;
  const size_t bound = static_cast<size_t>(c.n_layer * c.n_kv_head * granules * kvhost::kv_store::granule) *
                       cache.bytes_per_row();
  int64_t step = 0, worst_len = 0;
  size_t worst_bytes = 0;
  const auto on_step = [&](int32_t) {
    ++step;
    worst_bytes = std::max(worst_bytes, cache.allocated_bytes());  // before this step's cut: the peak
    EXPECT_LE(cache.allocated_bytes(), bound) << "step " << step;
    dec.after_step();
    for (int l = 0; l < c.n_layer; ++l)
      for (int h = 0; h < c.n_kv_head; ++h) {
        worst_len = std::max(worst_len, cache.length(l, h));
        ASSERT_LE(cache.length(l, h), T + K) << "step " << step << " layer " << l << " head " << h;
        EXPECT_LE(cache.capacity(l, h), granules * kvhost::kv_store::granule);
      }
  };
  const kvhost::decode_result d = mdl->decode_greedy(cache, pre.logits, static_cast<int>(steps) + 1, {}, dec.observer(), on_step);
  EXPECT_EQ(d.steps, steps);
  EXPECT_EQ(cache.n_past(), static_cast<int64_t>(prompt.size()) + steps);  // positions go on unchanged
  EXPECT_GE(dec.compressions(), c.n_layer * (steps / K - 1));              // every layer, every K steps
  EXPECT_GT(worst_len, T);                                                  // the cache did grow in between
  EXPECT_LE(worst_bytes, bound);
  // Without decode-time compression the same run ends with every head at 32 + 64 rows.
  EXPECT_LT(cache.retained_tokens(), c.n_layer * c.n_kv_head * (T + steps) / 2);
}

// A target above every head's final length never compresses: the tokens are those of plain
// decoding after the same prefill (the ring, the hook wrapper and the observer change nothing).
TEST_F(DecodeCompression, TargetAboveTheLengthIsPlainDecoding) {
  const kvtrim::method m = make("snapkv", 32);
  const kvtrim::decode_compressor dc(m, {4096, 8});
  const kvhost::run_report plain = kvhost::run_generation(*mdl, *tok, prompt, &m, 32, {});
  const kvhost::run_report dec = kvhost::run_generation(*mdl, *tok, prompt, &m, 32, {}, &dc);
  ASSERT_EQ(plain.tokens.size(), 32u);
  EXPECT_EQ(dec.tokens, plain.tokens);
  EXPECT_EQ(dec.decode_compressions, 0);
  EXPECT_EQ(dec.kv_allocated_bytes, plain.kv_allocated_bytes);
  // And a small target does cut: fewer bytes at the end than plain decoding.
  const kvtrim::decode_compressor small(m, {16, 8});
  const kvhost::run_report cut = kvhost::run_generation(*mdl, *tok, prompt, &m, 32, {}, &small);
  EXPECT_GT(cut.decode_compressions, 0);
  EXPECT_LT(cut.kv_allocated_bytes, plain.kv_allocated_bytes);
}

}  // namespace
