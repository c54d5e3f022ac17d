// Evaluation: metrics on hand-computed cases, task generators (deterministic, needle where they
// say), the RULER-format reader, the one-prefill runner against separate runs, and a tiny
// `kvtrim eval niah --limit 2` end to end.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "calibrate/calibration.hpp"
#include "engine/compression.hpp"
#include "eval/eval_metrics.hpp"
#include "eval/eval_report.hpp"
#include "eval/eval_runner.hpp"
#include "eval/eval_tasks.hpp"
#include "engine/gguf.hpp"
#include "engine/haystack.hpp"
#include "engine/needle.hpp"
#include "engine/model.hpp"
#include "engine/runner.hpp"
#include "engine/tokenizer.hpp"
#include "kvtrim/profile/profile.hpp"

namespace {

namespace fs = std::filesystem;
using namespace kvhost;

const std::string k_data = std::string(KVTRIM_SOURCE_DIR) + "/../shared/data";

// ---- metrics, by hand ----------------------------------------------------------------------

TEST(EvalMetrics, NeedleRecallCountsReferenceWords) {
  EXPECT_DOUBLE_EQ(needle_recall("Eat a sandwich!", "eat a sandwich and sit"), 3.0 / 5.0);
  EXPECT_DOUBLE_EQ(needle_recall("", "eat"), 0.0);
  EXPECT_DOUBLE_EQ(needle_recall("a a a", "a a b"), 2.0 / 3.0);  // clipped counts
}

TEST(EvalMetrics, PasskeyNeedsTheWholeNumber) {
  EXPECT_EQ(passkey_match("The pass key is 71432.", "71432"), 1.0);
  EXPECT_EQ(passkey_match("71432", "71432"), 1.0);
  EXPECT_EQ(passkey_match("The pass key is 714321.", "71432"), 0.0);
  EXPECT_EQ(passkey_match("7143 2", "71432"), 0.0);
  EXPECT_EQ(passkey_match("no digits", "71432"), 0.0);
}

TEST(EvalMetrics, StringMatchAllIsTheFractionOfReferencesFound) {
  EXPECT_DOUBLE_EQ(string_match_all("Answer: Foo and bar", {"foo", "BAR", "baz"}), 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(string_match_all("  4716302\n", {"4716302"}), 1.0);
  EXPECT_DOUBLE_EQ(string_match_all("red\x01" "blue", {"red\nblue"}), 1.0);  // control chars -> newline
  EXPECT_THROW(string_match_all("x", {}), std::invalid_argument);
}

TEST(EvalMetrics, RougeLIsLongBenchsSummaryLevelUnionLcs) {
  // Hand-worked: sets {the, cat, sat, on, mat} / {The, cat, is, on, the, mat} (case kept, words
  // counted once); LCS words {cat, on, the, mat} -> p = 4/5, r = 4/6.
  EXPECT_NEAR(rouge_l_f("the cat sat on the mat", "The cat is on the mat."), 2 * (0.8 * 4 / 6.0) / (0.8 + 4 / 6.0 + 1e-8), 1e-12);
  // The working note's union example: r = w1..w5, C = {w1 w2 w6 w7 w8, w1 w3 w8 w9 w5} -> 4 of 5.
  const double p = 4.0 / 8.0, r = 4.0 / 5.0;
  EXPECT_NEAR(rouge_l_f("w1 w2 w6 w7 w8. w1 w3 w8 w9 w5", "w1 w2 w3 w4 w5"), 2 * p * r / (p + r + 1e-8), 1e-12);
  EXPECT_EQ(rouge_l_f("", "a"), 0.0);
  EXPECT_EQ(rouge_l_f("...", "a"), 0.0);  // no sentence: the package raises, LongBench scores 0
  // Every golden case made by the `rouge` package itself (scripts/oracle/rouge_golden.py).
  std::ifstream in(std::string(KVTRIM_SOURCE_DIR) + "/tests/fixtures/rouge_l_golden.json");
  ASSERT_TRUE(in.good());
  const auto golden = nlohmann::json::parse(in);
  ASSERT_GE(golden.at("cases").size(), 50u);
  for (const auto& c : golden.at("cases"))
    EXPECT_NEAR(rouge_l_f(c.at("prediction"), c.at("reference")), c.at("rouge_l_f").get<double>(), 1e-12)
        << c.at("prediction") << " | " << c.at("reference");
}

TEST(EvalMetrics, KlAndPerplexityByHand) {
  const std::vector<float> p{std::log(0.5f), std::log(0.5f)}, q{std::log(0.25f), std::log(0.75f)};
  // 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75)
  EXPECT_NEAR(kl_divergence(p, q), 0.5 * std::log(2.0) + 0.5 * std::log(2.0 / 3.0), 1e-6);
  EXPECT_NEAR(kl_divergence(p, p), 0.0, 1e-9);
  // targets 0 then 1: nll = ln 2 + ln(4/3); ppl = exp(mean) = sqrt(8/3)
  EXPECT_NEAR(perplexity({p, q}, {0, 1}), std::sqrt(8.0 / 3.0), 1e-5);
  EXPECT_THROW(kl_divergence(p, {0.0f}), std::invalid_argument);
  EXPECT_THROW(perplexity({p}, {2}), std::invalid_argument);
  EXPECT_THROW(perplexity({p}, {0, 1}), std::invalid_argument);
}

TEST(EvalMetrics, LevalAsLevalScoresIt) {
  EXPECT_EQ(leval_normalize("The cat, a dog!"), "The cat dog");  // em.py's article removal is case-sensitive
  EXPECT_EQ(leval_mc_gt("(B) Their subconscious knew"), "B");
  EXPECT_EQ(leval_mc_gt("AC"), "AC");
  EXPECT_EQ(leval_mc_gt("none"), "A");
  // quality: the first capital A-D anywhere (so "Based ..." reads as B, as in L-Eval)
  EXPECT_EQ(leval_mc_output(" The answer is C", false), "C");
  EXPECT_EQ(leval_mc_output("Based on it, C", false), "B");
  EXPECT_EQ(leval_mc_output("  ", false), "None");
  // coursera: several options
  EXPECT_EQ(leval_mc_output("CA", true), "AC");
  EXPECT_EQ(leval_mc_output("A", true), "A");
  EXPECT_EQ(leval_mc_output(" B. and D. Question 2: A.", true), "BD");
  EXPECT_EQ(leval_mc_output("none of them", true), "A");  // L-Eval's fallback guess
  EXPECT_EQ(leval_exact_match("B", "B"), 1.0);
  EXPECT_EQ(leval_exact_match("AC", "ACD"), 0.25);  // some of the correct options
  EXPECT_EQ(leval_exact_match("AB", "ACD"), 0.0);
  EXPECT_EQ(leval_exact_match("The Role of art in society\nmore", "The role of art in society"), 1.0);
  EXPECT_EQ(leval_exact_match("x\nart", "The role of art"), 0.0);
  EXPECT_EQ(leval_exact_match("3.0", "3"), 1.0);
  EXPECT_EQ(leval_judge("True [fact: False]", "True [fact: False]"), 1.0);
  EXPECT_EQ(leval_judge("False. [fact: false.]", "True [fact: False]"), 0.5);
  EXPECT_EQ(leval_judge("no idea [fact: ]", "True [fact: False]"), 0.0);
}

TEST(EvalTasks, TruncateMiddleKeepsBothEnds) {
  std::vector<int32_t> t{1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  EXPECT_EQ(truncate_middle(t, 4), (std::vector<int32_t>{1, 2, 9, 10}));
  EXPECT_EQ(truncate_middle(t, 5), (std::vector<int32_t>{1, 2, 8, 9, 10}));
  EXPECT_EQ(truncate_middle(t, 10), t);
  EXPECT_THROW(truncate_middle(t, 1), std::invalid_argument);
}

TEST(EvalTasks, ScoreDispatchesOnTheMetric) {
  eval_sample s;
  s.id = "x";
  s.references = {"71432"};
  s.metric = "passkey";
  EXPECT_EQ(score_answer(s, " 71432."), 1.0);
  s.metric = "fidelity";
  EXPECT_THROW(score_answer(s, ""), std::invalid_argument);
}

TEST(EvalReport, SummaryMeansPerTaskMethodBudget) {
  std::vector<nlohmann::json> recs = {
      {{"task", "niah_classic"}, {"method", "snapkv"}, {"budget", "64"}, {"kv_percent_of_full", 2.0}, {"score", 100.0}},
      {{"task", "niah_classic"}, {"method", "snapkv"}, {"budget", "64"}, {"kv_percent_of_full", 4.0}, {"score", 50.0}},
      {{"task", "niah_classic"}, {"method", "full"}, {"budget", "full"}, {"kv_percent_of_full", 100.0}, {"score", 80.0}},
      {{"task", "niah_classic"}, {"method", "snapkv"}, {"budget", "16"}, {"kv_percent_of_full", 1.0}, {"score", 0.0}}};
  const auto rows = summarize(recs);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].method, "full");  // method_names() order, then budgets ascending
  EXPECT_EQ(rows[1].budget, "16");
  EXPECT_EQ(rows[2].budget, "64");
  EXPECT_DOUBLE_EQ(rows[2].score, 75.0);
  EXPECT_DOUBLE_EQ(rows[2].kv_percent_of_full, 3.0);
  EXPECT_EQ(rows[2].n, 2);
}

TEST(EvalReport, ComparisonsAtEqualBytes) {
  auto rec = [](const std::string& task, const std::string& m, const std::string& b, double score) {
    return nlohmann::json{{"task", task}, {"method", m}, {"budget", b}, {"kv_percent_of_full", b == "full" ? 100.0 : 1.0},
                          {"score", score}};
  };
  // Two RULER tasks pool into one family: compresskv (60+40)/2 = 50 beats snapkv 45 and streaming 10.
  std::vector<nlohmann::json> recs = {
      rec("ruler_vt", "full", "full", 100), rec("ruler_cwe", "full", "full", 100),
      rec("ruler_vt", "compresskv", "64", 60), rec("ruler_cwe", "compresskv", "64", 40),
      rec("ruler_vt", "snapkv", "64", 45), rec("ruler_cwe", "snapkv", "64", 45),
      rec("ruler_vt", "streaming", "64", 10), rec("ruler_cwe", "streaming", "64", 10),
      rec("ruler_vt", "compresskv-uniform", "64", 48), rec("ruler_cwe", "compresskv-uniform", "64", 48),
      // fidelity KL: lower is better, so snapkv's 0.1 beats compresskv's 0.2
      {{"task", "fidelity"}, {"method", "compresskv"}, {"budget", "64"}, {"kv_percent_of_full", 1.0}, {"score", 90.0},
       {"kl", 0.2}, {"ppl", 12.0}},
      {{"task", "fidelity"}, {"method", "snapkv"}, {"budget", "64"}, {"kv_percent_of_full", 1.0}, {"score", 80.0},
       {"kl", 0.1}, {"ppl", 13.0}}};
  EXPECT_EQ(task_family("ruler_niah_single_1"), "ruler");
  EXPECT_EQ(task_family("leval_quality"), "leval");
  EXPECT_EQ(task_family("niah_classic"), "niah_classic");
  const std::string md = comparison_markdown(recs);
  // Paired over the two RULER prompts (no ids: paired in order): d = {60-45, 40-45} = {15, -5};
  // bootstrap means -5, 5, 15 with probabilities 1/4, 1/2, 1/4, so [-5, 15]: a tie, not a win.
  EXPECT_NE(md.find("| compresskv vs best baseline | 50.0 vs 45.0 snapkv: +5.0 [-5.0, +15.0] n=2 tie |"),
            std::string::npos) << md;
  EXPECT_NE(md.find("| compresskv - streaming | +40.0 [+30.0, +50.0] n=2 **win** |"), std::string::npos) << md;
  // One fidelity prompt: a point, never a verdict.
  EXPECT_NE(md.find("| compresskv vs best baseline | 0.2000 vs 0.1000 snapkv: +0.1000 [+0.1000, +0.1000] n=1 tie |"),
            std::string::npos) << md;
  // snapkv: ruler and the three fidelity tables, each a tie.
  EXPECT_NE(md.find("vs snapkv 0 wins, 4 ties, 0 losses; vs streaming 1 wins, 0 ties, 0 losses."), std::string::npos)
      << md;
  // The ablation's steps: uniform 48 vs snapkv 45 on both prompts (a constant +3), then {12, -8}.
  EXPECT_NE(md.find("| compresskv-uniform - snapkv | +3.0 [+3.0, +3.0] n=2 **win** |"), std::string::npos) << md;
  EXPECT_NE(md.find("| compresskv - compresskv-uniform | +2.0 [-8.0, +12.0] n=2 tie |"), std::string::npos) << md;
  // Against the full cache (100 on both prompts: both correct): compresskv {-40, -60}.
  EXPECT_NE(md.find("ruler, full cache correct (2 prompts):"), std::string::npos) << md;
  EXPECT_NE(md.find("ruler, full cache wrong (0 prompts):\n\n(none)"), std::string::npos) << md;
  EXPECT_NE(md.find("| compresskv | -50.0 [-60.0, -40.0] n=2 **loss** |"), std::string::npos) << md;
  EXPECT_NE(md.find("| lowest - next lowest | snapkv - compresskv: -0.1000 [-0.1000, -0.1000] n=1 tie |"),
            std::string::npos) << md;
  EXPECT_NE(md.find("| compresskv | 50% |"), std::string::npos) << md;  // % of the full cache
  EXPECT_NE(md.find("| compresskv-uniform | 48.0 |"), std::string::npos) << md;  // the ablation rows
  EXPECT_NE(md.find("| lowest KL | snapkv 0.1000 |"), std::string::npos) << md;
  EXPECT_EQ(md.find("HeadKV against Ada-KV"), std::string::npos) << md;  // neither was run
}

// Hand-computed intervals on tiny record sets. Records pair by task|id, not by their order.
nlohmann::json prompt_rec(const std::string& task, const std::string& id, const std::string& m, const std::string& b,
                          double score) {
  return {{"task", task}, {"id", id}, {"method", m}, {"budget", b}, {"kv_percent_of_full", b == "full" ? 100.0 : 2.0},
          {"score", score}};
}

TEST(EvalReport, PairedIntervalByHandIsAWin) {
  // compresskv beats snapkv by exactly 10 on each of three prompts, listed in another order:
  // every resample mean is 10, so the interval is [10, 10] and excludes 0: a win.
  std::vector<nlohmann::json> recs = {
      prompt_rec("niah_passkey", "p1", "compresskv", "32", 100), prompt_rec("niah_passkey", "p2", "compresskv", "32", 60),
      prompt_rec("niah_passkey", "p3", "compresskv", "32", 20),  prompt_rec("niah_passkey", "p3", "snapkv", "32", 10),
      prompt_rec("niah_passkey", "p1", "snapkv", "32", 90),      prompt_rec("niah_passkey", "p2", "snapkv", "32", 50)};
  nlohmann::json cmp = nlohmann::json::array();
  const std::string md = comparison_markdown(recs, &cmp);
  EXPECT_NE(md.find("| compresskv vs best baseline | 60.0 vs 50.0 snapkv: +10.0 [+10.0, +10.0] n=3 **win** |"),
            std::string::npos) << md;
  EXPECT_NE(md.find("vs snapkv 1 wins, 0 ties, 0 losses."), std::string::npos) << md;
  // The same comparison as data, with the same fields.
  ASSERT_EQ(cmp.size(), 1u) << cmp.dump(1);
  EXPECT_EQ(cmp[0]["section"], "compresskv_vs_baselines");
  EXPECT_EQ(cmp[0]["table"], "niah_passkey");
  EXPECT_EQ(cmp[0]["subset"], "all");
  EXPECT_EQ(cmp[0]["budget"], "32");
  EXPECT_EQ(cmp[0]["a"], "compresskv");
  EXPECT_EQ(cmp[0]["b"], "snapkv");
  EXPECT_DOUBLE_EQ(cmp[0]["mean"].get<double>(), 10.0);
  EXPECT_DOUBLE_EQ(cmp[0]["lo"].get<double>(), 10.0);
  EXPECT_DOUBLE_EQ(cmp[0]["hi"].get<double>(), 10.0);
  EXPECT_EQ(cmp[0]["prompts"], 3);
  EXPECT_EQ(cmp[0]["verdict"], "win");
  EXPECT_EQ(cmp[0]["seed"], 0);
  EXPECT_EQ(cmp[0]["resamples"], 10000);
}

TEST(EvalReport, ADifferenceInsideTheIntervalIsATie) {
  // d = {0, 20}: mean +10, but resample means are 0, 10, 20 with probabilities 1/4, 1/2, 1/4, so
  // the 2.5 % point is 0 and the interval [0, 20] does not exclude 0: a tie, whatever the means.
  std::vector<nlohmann::json> recs = {
      prompt_rec("niah_passkey", "a", "compresskv", "32", 100), prompt_rec("niah_passkey", "b", "compresskv", "32", 20),
      prompt_rec("niah_passkey", "a", "snapkv", "32", 100),     prompt_rec("niah_passkey", "b", "snapkv", "32", 0)};
  nlohmann::json cmp = nlohmann::json::array();
  const std::string md = comparison_markdown(recs, &cmp);
  EXPECT_NE(md.find("| compresskv vs best baseline | 60.0 vs 50.0 snapkv: +10.0 [+0.0, +20.0] n=2 tie |"),
            std::string::npos) << md;
  ASSERT_EQ(cmp.size(), 1u);
  EXPECT_EQ(cmp[0]["verdict"], "tie");
  // Only the prompts both ran are paired: a third prompt of compresskv alone changes nothing.
  recs.push_back(prompt_rec("niah_passkey", "c", "compresskv", "32", 0));
  EXPECT_NE(comparison_markdown(recs).find("+10.0 [+0.0, +20.0] n=2 tie"), std::string::npos);
  // A loss is a loss only where the interval lies below 0.
  recs = {prompt_rec("niah_passkey", "a", "compresskv", "32", 0), prompt_rec("niah_passkey", "b", "compresskv", "32", 10),
          prompt_rec("niah_passkey", "a", "snapkv", "32", 30), prompt_rec("niah_passkey", "b", "snapkv", "32", 40)};
  EXPECT_NE(comparison_markdown(recs).find("5.0 vs 35.0 snapkv: -30.0 [-30.0, -30.0] n=2 **loss** |"),
            std::string::npos) << comparison_markdown(recs);
}

TEST(EvalReport, HeadlineMethodsAgainstEveryBaseline) {
  // Constant per-prompt differences over three prompts, so every interval is a point: compresskv 60
  // against adakv 50 (win), cake 70 (loss), snapkv-paper 40 (win) and headkv 60 (tie at 0).
  std::vector<nlohmann::json> recs;
  for (const char* p : {"p1", "p2", "p3"})
    for (const auto& [m, s] : std::vector<std::pair<std::string, double>>{{"compresskv", 60}, {"headkv", 60},
                                                                         {"adakv", 50}, {"cake", 70},
                                                                         {"snapkv-paper", 40},
                                                                         {"compresskv-uniform", 55}})
      recs.push_back(prompt_rec("niah_passkey", p, m, "64", s));
  nlohmann::json cmp = nlohmann::json::array();
  const std::string md = comparison_markdown(recs, &cmp);
  EXPECT_NE(md.find("## CompressKV against every baseline"), std::string::npos) << md;
  EXPECT_NE(md.find("| compresskv vs best baseline | 60.0 vs 70.0 cake: -10.0 [-10.0, -10.0] n=3 **loss** |"),
            std::string::npos) << md;
  EXPECT_NE(md.find("| compresskv - headkv | +0.0 [+0.0, +0.0] n=3 tie |"), std::string::npos) << md;
  EXPECT_NE(md.find("vs adakv 1 wins, 0 ties, 0 losses; vs cake 0 wins, 0 ties, 1 losses; vs snapkv-paper 1 wins, 0 "
                    "ties, 0 losses; vs headkv 0 wins, 1 ties, 0 losses."),
            std::string::npos) << md;
  // compresskv-uniform is CompressKV's own ablation, never one of its baselines.
  const size_t own = md.find("| compresskv - compresskv-uniform | +5.0");
  EXPECT_NE(own, std::string::npos) << md;  // once, in the ablation below
  EXPECT_EQ(own, md.rfind("| compresskv - compresskv-uniform | +5.0")) << md;
  // HeadKV against the same baselines, CompressKV left to the section above.
  EXPECT_NE(md.find("## HeadKV against every baseline"), std::string::npos) << md;
  EXPECT_NE(md.find("| headkv - snapkv-paper | +20.0 [+20.0, +20.0] n=3 **win** |"), std::string::npos) << md;
  EXPECT_EQ(md.find("| headkv - compresskv |"), std::string::npos) << md;
  // The paper's ablation, from its mis-grouped SnapKV.
  EXPECT_NE(md.find("| compresskv-uniform - snapkv-paper | +15.0 [+15.0, +15.0] n=3 **win** |"), std::string::npos)
      << md;
  size_t headkv_rows = 0, paper_rows = 0;
  for (const auto& c : cmp) {
    headkv_rows += c["section"] == "headkv_vs_baselines";
    paper_rows += c["section"] == "ablation_paper";
  }
  EXPECT_EQ(headkv_rows, 3u);  // adakv, cake, snapkv-paper
  EXPECT_EQ(paper_rows, 3u);
}

TEST(EvalReport, FullCacheCorrectAndWrongPromptsApart) {
  // The full cache gets p1 and p2 right, p3 wrong; snapkv keeps p1 only, and gets p3 "right".
  std::vector<nlohmann::json> recs = {
      prompt_rec("niah_passkey", "p1", "full", "full", 100), prompt_rec("niah_passkey", "p2", "full", "full", 100),
      prompt_rec("niah_passkey", "p3", "full", "full", 0),   prompt_rec("niah_passkey", "p1", "snapkv", "32", 100),
      prompt_rec("niah_passkey", "p2", "snapkv", "32", 0),   prompt_rec("niah_passkey", "p3", "snapkv", "32", 100)};
  const std::string md = summary_markdown(recs);
  EXPECT_NE(md.find("## niah_passkey (n = 3)"), std::string::npos) << md;
  EXPECT_NE(md.find("| snapkv | 66.7 (2.00%) |"), std::string::npos) << md;
  EXPECT_NE(md.find("### niah_passkey: full cache correct (2 prompts)\n\n| method | B=32 | full |\n|---|---|---|\n"
                    "| full | | 100.0 (100.00%) |\n| snapkv | 50.0 (2.00%) | |"),
            std::string::npos) << md;
  EXPECT_NE(md.find("### niah_passkey: full cache wrong (1 prompt)\n\n| method | B=32 | full |\n|---|---|---|\n"
                    "| full | | 0.0 (100.00%) |\n| snapkv | 100.0 (2.00%) | |"),
            std::string::npos) << md;
  nlohmann::json cmp = nlohmann::json::array();
  const std::string c = comparison_markdown(recs, &cmp);
  // Correct subset: d = {0, -100}: means 0, -50, -100 -> [-100, 0], a tie at n = 2.
  EXPECT_NE(c.find("niah_passkey, full cache correct (2 prompts):"), std::string::npos) << c;
  EXPECT_NE(c.find("| snapkv | -50.0 [-100.0, +0.0] n=2 tie |"), std::string::npos) << c;
  EXPECT_NE(c.find("niah_passkey, full cache wrong (1 prompt):"), std::string::npos) << c;
  EXPECT_NE(c.find("| snapkv | +100.0 [+100.0, +100.0] n=1 tie |"), std::string::npos) << c;
  ASSERT_EQ(cmp.size(), 2u) << cmp.dump(1);
  EXPECT_EQ(cmp[0]["subset"], "full_correct");
  EXPECT_EQ(cmp[0]["prompts"], 2);
  EXPECT_EQ(cmp[1]["subset"], "full_wrong");
  EXPECT_EQ(cmp[1]["b"], "full");
}

// ---- on the model ----------------------------------------------------------------------------

class EvalModel : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const auto path = default_model_path();
    if (!fs::exists(path)) {
      missing_ = "model not found at " + path + ": run scripts/fetch_model.sh (or set KVTRIM_MODEL)";
      return;
    }
    file_ = std::make_unique<gguf_file>(path);
    model_ = std::make_unique<model>(*file_);
    tok_ = std::make_unique<tokenizer>(tokenizer::from_gguf(*file_));
    essays_ = load_essays(k_data + "/pg_essays");
  }
  void SetUp() override { ASSERT_TRUE(model_) << missing_; }

  inline static std::unique_ptr<gguf_file> file_;
  inline static std::unique_ptr<model> model_;
  inline static std::unique_ptr<tokenizer> tok_;
  inline static std::string essays_, missing_;
};

TEST_F(EvalModel, EssaysSkipTheLicence) {
  EXPECT_EQ(essays_.find("Permission is hereby granted"), std::string::npos);
  EXPECT_GT(essays_.size(), 600000u);
}

TEST_F(EvalModel, NiahIsDeterministicAndPlacesTheNeedle) {
  niah_options o;
  o.lengths = {300, 600};
  o.depths = {0.0, 0.5, 1.0};
  o.seed = 7;
  const auto a = niah_samples(*tok_, essays_, o), b = niah_samples(*tok_, essays_, o);
  ASSERT_EQ(a.size(), 12u);  // 2 lengths x 3 depths x (classic, passkey)
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].id, b[i].id);
    EXPECT_EQ(a[i].prompt, b[i].prompt);
    EXPECT_EQ(a[i].references, b[i].references);
  }
  EXPECT_EQ(a[0].id, "niah_classic-L300-D0");
  EXPECT_EQ(a[3].id, "niah_passkey-L300-D50");
  for (const auto& s : a) {
    const double depth = s.meta["depth"].get<double>();
    const double at = s.meta["needle_char"].get<double>() / s.meta["document_chars"].get<double>();
    // Moved back to the previous sentence end: never after the depth, and within a sentence or two.
    EXPECT_LE(at, depth + 1e-9) << s.id;
    EXPECT_GE(at, depth - 0.12) << s.id;
    if (depth == 0.0) {
      EXPECT_EQ(s.meta["needle_char"].get<int64_t>(), 0);
    }
    // The prompt holds the fact exactly once, and about the requested number of tokens.
    const std::string text = tok_->decode(std::vector<int>(s.prompt.begin(), s.prompt.end()));
    const std::string fact = s.task == "niah_classic" ? classic_needle().fact
                                                       : "The pass key is " + s.references[0] + ".";
    ASSERT_NE(text.find(fact), std::string::npos) << s.id;
    EXPECT_EQ(text.find(fact), text.rfind(fact)) << s.id;
    EXPECT_NEAR(static_cast<double>(s.prompt.size()), s.meta["length"].get<double>(), 30.0) << s.id;
  }
  // The passkey follows the seed.
  o.seed = 8;
  const auto c = niah_samples(*tok_, essays_, o);
  EXPECT_NE(c[1].references, a[1].references);
  EXPECT_EQ(c[1].references[0].size(), 5u);
  o.depths = {1.5};
  EXPECT_THROW(niah_samples(*tok_, essays_, o), std::invalid_argument);
}

TEST_F(EvalModel, NiahHeldOutNeedlesOverRotatedHaystacks) {
  niah_options o;
  o.lengths = {300};
  o.depths = {0.5, 1.0};
  o.classic = o.passkey = false;
  o.held_out = true;
  o.haystacks = {0, 1};
  const auto a = niah_samples(*tok_, essays_, o);
  ASSERT_EQ(a.size(), 4u);  // 2 rotations x 1 length x 2 depths
  const char* ids[] = {"niah_heldout-L300-D50-H0", "niah_heldout-L300-D100-H0", "niah_heldout-L300-D50-H1",
                       "niah_heldout-L300-D100-H1"};
  const auto& held = held_out_needles();
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].id, ids[i]);
    EXPECT_EQ(a[i].meta["needle"], held[i % 2 + i / 2].name);  // round robin from the rotation's index
    EXPECT_EQ(a[i].references, std::vector<std::string>{held[i % 2 + i / 2].nd.answer});
    const std::string text = tok_->decode(std::vector<int>(a[i].prompt.begin(), a[i].prompt.end()));
    const std::string& fact = held[i % 2 + i / 2].nd.fact;
    ASSERT_NE(text.find(fact), std::string::npos) << ids[i];
    EXPECT_EQ(text.find(fact), text.rfind(fact)) << ids[i];
  }
  // Rotation 0 is the essays as they are; rotation 1 starts elsewhere, at a paragraph.
  EXPECT_EQ(rotated_haystack(essays_, 0, 0), essays_);
  const std::string r1 = rotated_haystack(essays_, 1, 0);
  EXPECT_EQ(r1.size(), essays_.size() + 1);
  EXPECT_NE(r1.substr(0, 2000), essays_.substr(0, 2000));
  EXPECT_NE(essays_.find(r1.substr(0, 2000)), std::string::npos);
  EXPECT_NE(rotated_haystack(essays_, 1, 1).substr(0, 2000), r1.substr(0, 2000));  // the seed moves it
  const auto text_of = [&](const eval_sample& s) { return tok_->decode(std::vector<int>(s.prompt.begin(), s.prompt.end())); };
  EXPECT_NE(text_of(a[0]).find(essays_.substr(0, 200)), std::string::npos);  // each document opens its rotation
  EXPECT_NE(text_of(a[2]).find(r1.substr(0, 200)), std::string::npos);
  EXPECT_EQ(text_of(a[2]).find(essays_.substr(0, 200)), std::string::npos);
  // A shard of one rotation gives exactly that rotation's samples of the full run.
  o.haystacks = {1};
  const auto one = niah_samples(*tok_, essays_, o);
  ASSERT_EQ(one.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(one[i].id, a[i + 2].id);
    EXPECT_EQ(one[i].prompt, a[i + 2].prompt);
  }
  o.haystacks = {};
  EXPECT_THROW(niah_samples(*tok_, essays_, o), std::invalid_argument);
}

TEST(HeldOutNeedles, ShareNoAnswerWordWithCalibration) {
  // Words an answer may share with anything (articles, prepositions) are not evidence of overlap.
  const std::set<std::string> common{"a", "an", "the", "in", "on", "of", "to", "at", "and", "with", "it", "is",
                                     "by", "from", "was", "every"};
  std::vector<kvhost::named_needle> cal = kvhost::retrieval_needles();
  cal.insert(cal.end(), kvhost::reasoning_needles().begin(), kvhost::reasoning_needles().end());
  std::set<std::string> cal_words;
  for (const auto& c : cal)
    for (const auto& w : kvhost::words(c.nd.fact + " " + c.nd.question + " " + c.nd.answer)) cal_words.insert(w);
  std::set<std::string> names;
  for (const auto& h : held_out_needles()) {
    EXPECT_TRUE(names.insert(h.name).second) << h.name;
    for (const auto& w : kvhost::words(h.nd.answer)) {
      if (!common.count(w)) {
        EXPECT_FALSE(cal_words.count(w)) << h.name << ": '" << w << "'";
      }
    }
    EXPECT_NE(h.nd.fact.find(h.nd.answer), std::string::npos) << h.name;
    EXPECT_EQ(h.nd.fact.rfind(h.nd.answer_prefix, 0), 0u) << h.name;  // the prefix opens the fact
  }
  EXPECT_EQ(names.size(), 8u);
}

TEST_F(EvalModel, FidelityPassagesAreDeterministic) {
  fidelity_options o;
  o.lengths = {200};
  o.passages = 2;
  o.continuation = 16;
  o.seed = 3;
  const auto a = fidelity_samples(*tok_, essays_, o), b = fidelity_samples(*tok_, essays_, o);
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[0].prompt, b[0].prompt);
  EXPECT_EQ(a[1].continuation, b[1].continuation);
  EXPECT_NE(a[0].prompt, a[1].prompt);
  EXPECT_EQ(a[0].prompt.size(), 200u);
  EXPECT_EQ(a[0].continuation.size(), 16u);
  o.continuation = 1;
  EXPECT_THROW(fidelity_samples(*tok_, essays_, o), std::invalid_argument);
}

TEST_F(EvalModel, RulerJsonlReader) {
  const std::string fixture = std::string(KVTRIM_SOURCE_DIR) + "/tests/fixtures/ruler_tiny.jsonl";
  const auto s = jsonl_samples(*tok_, fixture, 8192, 24);
  ASSERT_EQ(s.size(), 3u);  // the blank line is skipped
  EXPECT_EQ(s[0].id, "jsonl-0");
  EXPECT_EQ(s[2].id, "jsonl-7");
  EXPECT_EQ(s[1].references, (std::vector<std::string>{"QPE", "XKJ"}));
  EXPECT_EQ(s[0].max_new_tokens, 24);
  // answer_prefix is appended to the prompt
  const std::string text0 = tok_->decode(std::vector<int>(s[0].prompt.begin(), s[0].prompt.end()));
  EXPECT_NE(text0.find("mentioned in the provided text is"), std::string::npos);
  EXPECT_DOUBLE_EQ(score_answer(s[1], "qpe, and XKJ"), 1.0);
  EXPECT_DOUBLE_EQ(score_answer(s[1], "QPE"), 0.5);
  // Cut in the middle to the limit.
  const auto cut = jsonl_samples(*tok_, fixture, 20, 8);
  EXPECT_EQ(cut[0].prompt.size(), 20u);
  EXPECT_EQ(std::vector<int32_t>(cut[0].prompt.begin(), cut[0].prompt.begin() + 10),
            std::vector<int32_t>(s[0].prompt.begin(), s[0].prompt.begin() + 10));
  EXPECT_EQ(cut[0].prompt.back(), s[0].prompt.back());
  // Malformed lines name the line.
  const std::string bad = (fs::temp_directory_path() / "kvtrim_eval_bad.jsonl").string();
  std::ofstream(bad) << "{\"input\": \"x\", \"outputs\": [\"a\"]}\n{\"input\": \"x\"}\n";
  try {
    jsonl_samples(*tok_, bad, 100, 8);
    ADD_FAILURE() << "no error for a line without outputs";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(":2:"), std::string::npos) << e.what();
  }
  std::ofstream(bad) << "not json\n";
  EXPECT_THROW(jsonl_samples(*tok_, bad, 100, 8), std::runtime_error);
  EXPECT_THROW(jsonl_samples(*tok_, bad + ".missing", 100, 8), std::runtime_error);
}

TEST_F(EvalModel, LevalAndLongbenchPromptsFitAndCarryReferences) {
  const auto q = leval_samples(*tok_, k_data + "/leval/quality.jsonl", 1024, 16);
  EXPECT_EQ(q.size(), 202u);  // every question of the 15 documents
  for (const auto& s : q) {
    EXPECT_LE(s.prompt.size(), 1024u) << s.id;
    EXPECT_GE(s.prompt.size(), 900u) << s.id;  // the documents are longer than 1k tokens
    EXPECT_EQ(s.metric, "leval_mc");
  }
  EXPECT_EQ(q[0].id, "leval_quality-d0-q0");
  EXPECT_EQ(leval_mc_gt(q[0].references[0]), "B");
  const auto sf = leval_samples(*tok_, k_data + "/leval/sci_fi.jsonl", 1024, 16);
  ASSERT_FALSE(sf.empty());
  EXPECT_FALSE(sf[0].fact_prompt.empty());
  EXPECT_EQ(sf[0].metric, "leval_judge");
  const std::string fact = tok_->decode(std::vector<int>(sf[0].fact_prompt.begin(), sf[0].fact_prompt.end()));
  EXPECT_NE(fact.find("real-world knowledge"), std::string::npos);
  EXPECT_THROW(leval_samples(*tok_, k_data + "/leval/news_summ.jsonl", 1024, 16), std::invalid_argument);
  const auto lb = longbench_samples(*tok_, k_data + "/longbench", 1500, 0);
  EXPECT_EQ(lb.size(), 200u);
  EXPECT_EQ(lb[0].max_new_tokens, 512);  // dataset2maxlen.json
  EXPECT_LE(lb[0].prompt.size(), 1500u);
  const std::string text = tok_->decode(std::vector<int>(lb[0].prompt.begin(), lb[0].prompt.end()));
  EXPECT_NE(text.find("You are given several news passages."), std::string::npos);
  EXPECT_NE(text.find("Summary:"), std::string::npos);
}

TEST_F(EvalModel, RulerTasksAreSeededAndHoldTheirAnswers) {
  ruler_options o;
  o.lengths = {1024};
  o.seed = 5;
  const auto a = ruler_samples(*tok_, essays_, o), b = ruler_samples(*tok_, essays_, o);
  ASSERT_EQ(a.size(), ruler_task_names().size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].prompt, b[i].prompt) << a[i].id;
    EXPECT_EQ(a[i].references, b[i].references) << a[i].id;
    EXPECT_LE(a[i].prompt.size(), 1024u) << a[i].id;
    EXPECT_GE(a[i].prompt.size(), 900u) << a[i].id;
    const std::string text = tok_->decode(std::vector<int>(a[i].prompt.begin(), a[i].prompt.end()));
    for (const auto& ref : a[i].references) EXPECT_NE(text.find(ref), std::string::npos) << a[i].id << " " << ref;
  }
  EXPECT_EQ(a[0].id, "ruler_niah_single_1-L1024-S0");
  // multivalue asks for 4 values, multiquery for 4 keys' values, vt for the 5 chained names
  const auto find = [&](const std::string& t) {
    return *std::find_if(a.begin(), a.end(), [&](const eval_sample& s) { return s.task == "ruler_" + t; });
  };
  EXPECT_EQ(find("niah_multivalue").references.size(), 4u);
  EXPECT_EQ(find("niah_multiquery").references.size(), 4u);
  EXPECT_EQ(find("vt").references.size(), 5u);
  EXPECT_EQ(find("cwe").references.size(), 10u);
  EXPECT_EQ(find("fwe").references.size(), 3u);
  o.seed = 6;
  EXPECT_NE(ruler_samples(*tok_, essays_, o)[0].references, a[0].references);
  o.tasks = {"nope"};
  EXPECT_THROW(ruler_samples(*tok_, essays_, o), std::invalid_argument);
  o.tasks = {"niah_multikey_2"};
  o.lengths = {64};  // the needles alone don't fit
  EXPECT_THROW(ruler_samples(*tok_, essays_, o), std::invalid_argument);
}

// The one-prefill runner gives exactly what a separate compressed prefill gives: the same store,
// row for row, the same greedy answer and the same bytes; CAKE's cascade included.
TEST_F(EvalModel, OnePrefillEqualsSeparateRuns) {
  const needle_prompt p = build_needle_prompt(*tok_, essays_, 300, 0.4, classic_needle());
  const auto shape = kvtrim_shape(model_->config());
  const auto stops = default_stop_tokens(*file_);
  // With the attention's column sums and the pre-RoPE queries, for h2o and expected_attention.
  const prefill_capture cap = capture_prefill(*model_, p.tokens, 8, true, true);
  EXPECT_EQ(cap.n, static_cast<int64_t>(p.tokens.size()));

  std::unique_ptr<kvtrim::profile> prof;
  const std::string prof_path = std::string(KVTRIM_SOURCE_DIR) + "/profiles/smollm2-135m-instruct.json";
  if (fs::exists(prof_path)) prof = std::make_unique<kvtrim::profile>(kvtrim::load_profile(prof_path));
  std::vector<std::string> names{"full", "streaming", "snapkv", "pyramidkv", "adakv", "cake",
                                 "criticalkv", "h2o", "expected_attention"};
  if (prof) names.insert(names.end(), {"headkv", "compresskv", "compresskv-uniform"});
  for (const auto& name : names) {
    kvtrim::method_spec c;
    c.name = name;
    c.target = kvtrim::budget::tokens(24);
    c.prof = prof.get();
    const kvtrim::method m = kvtrim::make_method(c, shape);

    // Separate: the host's own compressed prefill.
    kv_store separate;
    compression_session sess(m, separate, cap.n);
    const prefill_result pr = model_->prefill(p.tokens, separate, name == "full" ? prefill_hook{} : sess.hook(), 8);
    kv_store shared;
    build_cache(cap, name == "full" ? nullptr : &m, shared);
    EXPECT_EQ(pr.logits, cap.logits) << name;
    EXPECT_EQ(shared.retained_bytes(), separate.retained_bytes()) << name;
    EXPECT_EQ(shared.allocated_bytes(), separate.allocated_bytes()) << name;
    EXPECT_EQ(shared.n_past(), separate.n_past()) << name;
    for (int l = 0; l < shape.layers; ++l)
      for (int g = 0; g < shape.kv_heads; ++g) {
        const int64_t len = separate.length(l, g);
        ASSERT_EQ(shared.length(l, g), len) << name << " layer " << l << " head " << g;
        const size_t bytes = static_cast<size_t>(len * shape.head_dim) * sizeof(float);
        EXPECT_EQ(std::memcmp(shared.k(l, g), separate.k(l, g), bytes), 0) << name << " K " << l << "/" << g;
        EXPECT_EQ(std::memcmp(shared.v(l, g), separate.v(l, g), bytes), 0) << name << " V " << l << "/" << g;
      }
    if (name != "full") {
      EXPECT_LT(shared.retained_bytes(), cap.full_kv_bytes()) << name;
    }

    // And the answers: run_config against run_generation.
    const config_run one = run_config(*model_, cap, name == "full" ? nullptr : &m, 8, stops);
    const run_report sep = run_generation(*model_, *tok_, p.tokens, name == "full" ? nullptr : &m, 8, stops);
    EXPECT_EQ(one.tokens, sep.tokens) << name;
    EXPECT_EQ(one.kv_bytes, sep.kv_bytes) << name;
    EXPECT_EQ(one.kv_full_bytes, sep.kv_full_bytes) << name;
    EXPECT_EQ(one.budget, sep.budget) << name;
  }
  // A method whose window exceeds the captured one is refused.
  kvtrim::method_spec c;
  c.name = "snapkv";
  c.window = 16;
  kv_store s;
  EXPECT_THROW(build_cache(cap, std::make_unique<kvtrim::method>(kvtrim::make_method(c, shape)).get(), s),
               kvtrim::error);
}

// ---- the CLI, end to end ---------------------------------------------------------------------

std::string cli_path() {  // the kvtrim binary of this build: <build>/bin/kvtrim beside <build>/tests
  const fs::path exe = fs::read_symlink("/proc/self/exe");
  return (exe.parent_path().parent_path() / "bin" / "kvtrim").string();
}

TEST_F(EvalModel, CliNiahLimit2EndToEnd) {
  const std::string cli = cli_path();
  if (!fs::exists(cli)) GTEST_SKIP() << "kvtrim CLI not built at " << cli;
  const fs::path dir = fs::temp_directory_path() / "kvtrim_eval_e2e";
  fs::remove_all(dir);
  const std::string base = "'" + cli + "' eval niah --limit 2 --lengths 512,1024 --depths 50 --variants classic "
                           "--methods full,snapkv,cake --budgets 32 --max-new-tokens 16 --quiet --out '" +
                           dir.string() + "'";
  ASSERT_EQ(std::system((base + " > /dev/null").c_str()), 0);
  const auto recs = read_records((dir / "samples.jsonl").string());
  ASSERT_EQ(recs.size(), 6u);  // 2 samples x (full, snapkv@32, cake@32)
  for (const auto& r : recs) {
    for (const char* k : {"id", "method", "budget", "kv_bytes", "kv_percent_of_full", "answer", "score", "prefill_s",
                          "kvtrim_s", "decode_s", "length", "depth"})
      EXPECT_TRUE(r.contains(k)) << k;
    if (r["method"] == "full") {
      EXPECT_DOUBLE_EQ(r["kv_percent_of_full"].get<double>(), 100.0);
    } else {
      EXPECT_LT(r["kv_percent_of_full"].get<double>(), 10.0);
    }
  }
  std::ifstream csv(dir / "summary.csv");
  std::string header;
  std::getline(csv, header);
  EXPECT_EQ(header, "task,method,budget,kv_percent_of_full,score,n");
  int rows = 0;
  for (std::string line; std::getline(csv, line);) rows += line.empty() ? 0 : 1;
  EXPECT_EQ(rows, 3);
  EXPECT_TRUE(fs::exists(dir / "summary.md"));
  EXPECT_TRUE(fs::exists(dir / "config.json"));
  EXPECT_TRUE(fs::exists(dir / "plots" / "heatmap_niah_classic.svg"));
  // Resumed: nothing left to do, nothing appended.
  ASSERT_EQ(std::system((base + " > /dev/null").c_str()), 0);
  EXPECT_EQ(read_records((dir / "samples.jsonl").string()).size(), 6u);
  std::ifstream cf(dir / "config.json");
  EXPECT_EQ(nlohmann::json::parse(cf)["configs_run_last_invocation"].get<int>(), 0);
  // An interrupted append (half a last line) is redone, and the next record starts on a new line.
  {
    std::ifstream in(dir / "samples.jsonl");
    std::vector<std::string> lines;
    for (std::string l; std::getline(in, l);) lines.push_back(l);
    in.close();
    std::ofstream o(dir / "samples.jsonl", std::ios::trunc);
    for (size_t i = 0; i + 1 < lines.size(); ++i) o << lines[i] << "\n";
    o << lines.back().substr(0, lines.back().size() / 2);
  }
  ASSERT_EQ(std::system((base + " > /dev/null").c_str()), 0);
  EXPECT_EQ(read_records((dir / "samples.jsonl").string()).size(), 6u);
  std::ifstream cf2(dir / "config.json");
  EXPECT_EQ(nlohmann::json::parse(cf2)["configs_run_last_invocation"].get<int>(), 1);
  // report re-renders; bad input -> non-zero exit, nothing written.
  fs::remove(dir / "summary.csv");
  ASSERT_EQ(std::system(("'" + cli + "' report --quiet '" + dir.string() + "' > /dev/null").c_str()), 0);
  EXPECT_TRUE(fs::exists(dir / "summary.csv"));
  EXPECT_NE(std::system(("'" + cli + "' eval niah --budgets 0 --out '" + dir.string() + "x' 2>/dev/null").c_str()), 0);
  EXPECT_FALSE(fs::exists(dir.string() + "x"));
  EXPECT_NE(std::system(("'" + cli + "' eval nosuchtask --out '" + dir.string() + "' 2>/dev/null").c_str()), 0);
  EXPECT_NE(std::system(("'" + cli + "' report /nonexistent/dir 2>/dev/null").c_str()), 0);
  // Every record carries the method's settings, the last part of its resume key.
  for (const auto& r : read_records((dir / "samples.jsonl").string())) {
    ASSERT_TRUE(r.contains("method_settings")) << r.dump();
    if (r["method"] == "snapkv") {
      EXPECT_EQ(r["method_settings"], "window=8;kernel=7;pooling=max");  // KVCache-Factory's setting
      EXPECT_EQ(r["method_params"]["pooling"], "max");
      EXPECT_EQ(r["window"], 8);
    } else if (r["method"] == "cake") {
      EXPECT_EQ(r["method_params"]["pooling"], "avg");  // CAKE's own code: avg, kernel 5
      EXPECT_EQ(r["method_params"]["kernel"], "5");
      EXPECT_EQ(r["method_params"]["gamma"], "200");
    } else {
      EXPECT_EQ(r["method_settings"], "full");
    }
  }
  // Other settings for a configuration the folder already holds: refused before anything is
  // written, never reused and never mixed in beside the old records.
  EXPECT_NE(std::system((base + " --pooling avg 2>/dev/null").c_str()), 0);
  EXPECT_NE(std::system((base + " --param cake:gamma=100 2>/dev/null").c_str()), 0);
  EXPECT_EQ(read_records((dir / "samples.jsonl").string()).size(), 6u);
  {
    std::ifstream cf3(dir / "config.json");
    EXPECT_EQ(nlohmann::json::parse(cf3)["configs_run_last_invocation"].get<int>(), 1);  // not rewritten
  }
  // Records of an older kvtrim (no settings) are not taken for any settings either.
  {
    auto recs2 = read_records((dir / "samples.jsonl").string());
    std::ofstream o(dir / "samples.jsonl", std::ios::trunc);
    for (auto& r : recs2) {
      r.erase("method_settings");
      o << r.dump() << "\n";
    }
  }
  EXPECT_NE(std::system((base + " 2>/dev/null").c_str()), 0);
  EXPECT_EQ(read_records((dir / "samples.jsonl").string()).size(), 6u);
  fs::remove_all(dir);
}

}  // namespace
