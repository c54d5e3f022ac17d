// The one needle-prompt builder (engine/needle.hpp) gives the token ids that eval's and
// calibration's own builders gave before they were folded into it. The fixture was written by
// those builders at commit c1e2e7a on generated_haystack(40000): eval records and calibration
// resume keys depend on these prompts staying the same.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "calibrate/calibration.hpp"
#include "default_model.hpp"
#include "engine/haystack.hpp"
#include "engine/needle.hpp"

namespace {

nlohmann::json fixture() {
  std::ifstream in(std::string(KVTRIM_SOURCE_DIR) + "/tests/fixtures/needle_prompts.json");
  EXPECT_TRUE(in) << "tests/fixtures/needle_prompts.json missing";
  return nlohmann::json::parse(in);
}

kvhost::needle passkey_needle() {
  kvhost::needle nd = kvhost::classic_needle();
  nd.fact = "The pass key is 48213. Remember it. 48213 is the pass key.";
  nd.question = "What is the pass key?";
  nd.answer = "48213";
  nd.answer_prefix = "The pass key is";
  return nd;
}

// Runs check(case, length, depth) on every case of fixture()[part], named in failures.
template <class Check>
void for_each_case(const nlohmann::json& cases, size_t expected, Check check) {
  ASSERT_EQ(cases.size(), expected);
  for (const auto& c : cases) {
    const int64_t len = c.at("length").get<int64_t>();
    const double depth = c.at("depth").get<double>();
    SCOPED_TRACE(c.at("needle").get<std::string>() + " len " + std::to_string(len) + " depth " + std::to_string(depth));
    check(c, len, depth);
  }
}

}  // namespace

TEST(NeedlePrompt, TextSpliceGivesEvalsOldTokens) {
  const auto& m = kvtest::load_default_model();
  ASSERT_TRUE(m.tok) << kvtest::kMissingModel;
  const nlohmann::json f = fixture();
  const std::string hay = kvhost::generated_haystack(40000);
  for_each_case(f.at("eval"), 24, [&](const nlohmann::json& c, int64_t len, double depth) {
    const kvhost::needle nd = c.at("needle") == "classic" ? kvhost::classic_needle() : passkey_needle();
    const kvhost::needle_prompt p = kvhost::build_needle_prompt(*m.tok, hay, len, depth, nd);
    EXPECT_EQ(p.tokens, c.at("tokens").get<std::vector<int32_t>>());
    EXPECT_EQ(p.needle_char, c.at("needle_char").get<int64_t>());
    EXPECT_EQ(p.document_chars, c.at("document_chars").get<int64_t>());
  });
}

TEST(NeedlePrompt, TokenSpliceGivesCalibrationsOldTokens) {
  const auto& m = kvtest::load_default_model();
  ASSERT_TRUE(m.tok) << kvtest::kMissingModel;
  const nlohmann::json f = fixture();
  const std::vector<int> ids = m.tok->encode(kvhost::generated_haystack(40000), false);
  const kvhost::haystack_tokens hay = [&](int64_t n) { return std::vector<int32_t>(ids.begin(), ids.begin() + n); };
  std::vector<kvhost::named_needle> all = kvhost::retrieval_needles();
  all.insert(all.end(), kvhost::reasoning_needles().begin(), kvhost::reasoning_needles().end());
  for_each_case(f.at("calibration"), 36, [&](const nlohmann::json& c, int64_t len, double depth) {
    const auto it = std::find_if(all.begin(), all.end(), [&](const auto& p) { return p.name == c.at("needle"); });
    ASSERT_NE(it, all.end());
    const kvhost::needle_prompt p = kvhost::build_needle_prompt(
        *m.tok, hay, len, depth, it->nd, kvhost::calibration_needle_layout());
    EXPECT_EQ(p.tokens, c.at("tokens").get<std::vector<int32_t>>());
    EXPECT_EQ(p.span_begin, c.at("span_begin").get<int64_t>());
    EXPECT_EQ(p.span_end, c.at("span_end").get<int64_t>());
  });
}

TEST(NeedlePrompt, TooShortTargetsAreRejected) {
  const auto& m = kvtest::load_default_model();
  ASSERT_TRUE(m.tok) << kvtest::kMissingModel;
  const std::string hay = kvhost::generated_haystack(4000);
  EXPECT_THROW(kvhost::build_needle_prompt(*m.tok, hay, 40, 0.5, kvhost::classic_needle()),
               kvhost::needle_prompt_too_short);
  EXPECT_THROW(kvhost::build_needle_prompt(*m.tok, hay, 300, 1.5, kvhost::classic_needle()), std::invalid_argument);
}
