#pragma once
// Scores of the evaluation tasks, each as the benchmark it comes from computes it. All return
// values in [0, 1] except perplexity and KL.
#include <string>
#include <vector>

namespace kvhost {

// ROUGE-1 recall of the reference's words (lower-cased alphanumeric words, clipped counts):
// the needle test's score. Same as engine/needle.hpp's rouge1_recall.
double needle_recall(const std::string& answer, const std::string& reference);

// Passkey exact match: 1 when some maximal run of digits in the answer equals `passkey`.
double passkey_match(const std::string& answer, const std::string& passkey);

// RULER's string_match_all for one prediction: the fraction of references that occur in the
// prediction, case-insensitively (after RULER's post-processing: control characters become
// newlines, then strip).
double string_match_all(const std::string& prediction, const std::vector<std::string>& references);

// LongBench's ROUGE-L: `Rouge().get_scores([prediction], [reference], avg=True)["rouge-l"]["f"]` of
// the `rouge` package 1.0.1 -- summary-level union LCS over '.'-split sentences, case-sensitive,
// words split on whitespace only, each word counted once; 0 where the package raises (no
// sentence). Checked against the package on tests/fixtures/rouge_l_golden.json. Not emulated:
// Python's recursion limit, which makes the package fail on sentence pairs of ~1000 words.
double rouge_l_f(const std::string& prediction, const std::string& reference);

// Teacher-forced fidelity. Rows are log-probabilities over the vocabulary (log-softmax).
// KL(p || q) = sum_i p_i (log p_i - log q_i), in nats.
double kl_divergence(const std::vector<float>& logp, const std::vector<float>& logq);
// exp(-mean log q(target)) over the rows; targets[i] is the token row i should predict.
double perplexity(const std::vector<std::vector<float>>& logprobs, const std::vector<int>& targets);

}  // namespace kvhost

namespace kvhost {

// L-Eval's exact-match scoring (Evaluation/auto_eval.py + em.py of OpenLMLab/LEval), per task:
//   quality / coursera: leval_exact_match(leval_mc_output(pred, coursera), leval_mc_gt(gt));
//   topic_retrieval_longchat: leval_exact_match(pred, gt);
//   sci_fi: leval_judge(pred + " [fact: " + fact_pred + "]", gt) (mean of loyalty and fact).
std::string leval_normalize(const std::string& s);  // drop punctuation, articles a/an/the, extra spaces
std::string leval_mc_gt(const std::string& gt);     // letters A-D of the first word ("A" if none)
std::string leval_mc_output(const std::string& response, bool coursera);  // process_output_mc
double leval_exact_match(const std::string& prediction, const std::string& ground_truth);  // 1, 0.25 or 0
double leval_judge(const std::string& prediction_with_fact, const std::string& gt_with_fact);

}  // namespace kvhost
