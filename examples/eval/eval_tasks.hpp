#pragma once
// Evaluation tasks: each turns its data (or a seed) into samples — a tokenised prompt, what the
// answer is scored against and how — deterministically, so a resumed run sees the same samples.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/needle.hpp"
#include "engine/tokenizer.hpp"

namespace kvhost {

struct eval_sample {
  std::string task;  // the summary row's task: niah_classic, niah_passkey, fidelity, jsonl, ...
  std::string id;    // unique within a run, stable across runs with the same options
  std::vector<int32_t> prompt;
  std::vector<std::string> references;
  std::string metric;  // rouge1_recall | passkey | string_match_all | rouge_l | fidelity |
                       // leval_mc | leval_coursera | leval_em | leval_judge
  int max_new_tokens = 32;
  std::vector<int32_t> fact_prompt;   // leval sci_fi: answered once with the full cache
  std::vector<int32_t> continuation;  // fidelity: teacher-forced tokens after the prompt
  nlohmann::json meta = nlohmann::json::object();  // length, depth, ... (copied into each record)
};

// The essays as one text: every *.txt of `dir` in name order except licence files.
std::string load_essays(const std::string& dir);

// splitmix64: the tasks' only source of randomness.
uint64_t mix_seed(uint64_t x);

struct niah_options {
  std::vector<int64_t> lengths{1024, 2048, 4096};  // prompt tokens (approximately)
  std::vector<double> depths{0.0, 0.5, 1.0};       // of the document, in [0, 1]
  bool classic = true, passkey = true, held_out = false;
  std::vector<int> haystacks{0};  // rotations of the essays (rotated_haystack), each a grid of its own
  uint64_t seed = 0;
};
// The grid haystacks x lengths x depths, per cell the classic needle, the passkey variant and a
// held-out needle (held_out_needles(), round robin over the cells of a rotation); ids
// "niah_classic-L1024-D50", with "-H2" appended for rotation 2 unless haystacks is {0}. The passkey
// (5 digits) is drawn from the seed, the rotation and the cell.
std::vector<eval_sample> niah_samples(const tokenizer& tok, const std::string& haystack, const niah_options& o);

// Needles for evaluation only: none of their answers' words occurs in a calibration needle.
const std::vector<named_needle>& held_out_needles();
// `text` started at a line drawn from (seed, rotation) and wrapped around; rotation 0 is `text`.
std::string rotated_haystack(const std::string& text, int rotation, uint64_t seed);

// The passkey variant's needle for a given key (the fact, question and answer prefix).
std::string passkey_for(uint64_t seed, int64_t length, double depth);

struct fidelity_options {
  std::vector<int64_t> lengths{2048};  // context tokens
  int passages = 3;                    // per length
  int64_t continuation = 64;           // teacher-forced tokens
  uint64_t seed = 0;
};
// Plain-text passages (no chat template) starting at a paragraph of the essays chosen by the
// seed: `length` context tokens then `continuation` tokens; ids "fidelity-L2048-P0", with "-S3"
// appended for seed 3 (seeds other than 0 draw other passages).
std::vector<eval_sample> fidelity_samples(const tokenizer& tok, const std::string& text, const fidelity_options& o);

// RULER's released format: one JSON object per line with `input` (the whole prompt) and
// `outputs` (strings that must all appear); optional `index`, `answer_prefix` (appended), and
// `length`. Prompts longer than max_prompt_tokens are cut in the middle. Throws std::runtime_error
// naming the file and line for a malformed one, an empty input, or a prompt shorter than
// min_prompt_tokens (the largest window of the methods to run: each keeps that many tokens).
std::vector<eval_sample> jsonl_samples(const tokenizer& tok, const std::string& path, int64_t max_prompt_tokens,
                                       int max_new_tokens, const std::string& task = "jsonl",
                                       int64_t min_prompt_tokens = 1);

// L-Eval exact-match tasks: `path` is one of quality / coursera / sci_fi /
// topic_retrieval_longchat .jsonl (one document, several questions per line); one sample per
// question, task "leval_<name>", with L-Eval's baseline prompts in the model's chat template and
// the document cut in the middle so the prompt fits max_prompt_tokens. sci_fi samples carry
// `fact_prompt` (the question about the real world, without the document) for L-Eval's fact half.
std::vector<eval_sample> leval_samples(const tokenizer& tok, const std::string& path, int64_t max_prompt_tokens,
                                       int max_new_tokens);

// LongBench multi_news: `dir` holds multi_news.jsonl, dataset2prompt.json and dataset2maxlen.json;
// the prompt is LongBench's template, cut in the middle to max_prompt_tokens, in the chat
// template; max_new_tokens from dataset2maxlen (unless max_new_override > 0); ROUGE-L.
std::vector<eval_sample> longbench_samples(const tokenizer& tok, const std::string& dir, int64_t max_prompt_tokens,
                                           int max_new_override);

// RULER-style synthetic tasks, written from the RULER paper's description (Hsieh et al., 2024):
//   niah_single_1 (noise haystack, word key, number value), niah_single_2 (essays, number),
//   niah_single_3 (essays, UUID value), niah_multikey_1 (essays, 3 distractor keys),
//   niah_multikey_2 (noise, many distractor needles), niah_multikey_3 (UUID keys and values among
//   distractor needles), niah_multivalue (4 values of one key), niah_multiquery (4 keys asked),
//   vt (variable tracking: one chain of 4 hops among noise), cwe (the 10 most common words of a
//   list) and fwe (the 3 most frequent coded words); scored by string_match_all. `samples` per
//   task and length, seeded; ids "ruler_vt-L2048-S0".
struct ruler_options {
  std::vector<std::string> tasks;  // empty: all of the above
  std::vector<int64_t> lengths{1024, 2048, 4096};
  int samples = 1;
  uint64_t seed = 0;
};
const std::vector<std::string>& ruler_task_names();
std::vector<eval_sample> ruler_samples(const tokenizer& tok, const std::string& essays, const ruler_options& o);

// A prompt's token ids (special tokens parsed), as the samples hold them.
std::vector<int32_t> encode32(const tokenizer& tok, const std::string& text);

// Keeps the first and last max/2 tokens (L-Eval / LongBench / RULER truncation).
std::vector<int32_t> truncate_middle(const std::vector<int32_t>& t, int64_t max_tokens);

// The sample's score of an answer in [0, 1] by its metric (not for fidelity).
double score_answer(const eval_sample& s, const std::string& answer);

}  // namespace kvhost
