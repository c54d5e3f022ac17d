#pragma once
// Evaluation tasks: each turns its data (or a seed) into samples — a tokenised prompt, what the
// answer is scored against and how — deterministically, so a resumed run sees the same samples.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "host/tokenizer.hpp"

namespace kvhost {

struct eval_sample {
  std::string task;  // the summary row's task: niah_classic, niah_passkey, fidelity, jsonl, ...
  std::string id;    // unique within a run, stable across runs with the same options
  std::vector<int32_t> prompt;
  std::vector<std::string> references;
  std::string metric;  // rouge1_recall | passkey | string_match_all | rouge_l | fidelity
  int max_new_tokens = 32;
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
  bool classic = true, passkey = true;
  uint64_t seed = 0;
};
// The grid lengths x depths, classic needle then passkey variant per cell; ids
// "niah_classic-L1024-D50". The passkey (5 digits) is drawn from the seed and the cell.
std::vector<eval_sample> niah_samples(const tokenizer& tok, const std::string& haystack, const niah_options& o);
// The passkey variant's needle for a given key (the fact, question and answer prefix).
std::string passkey_for(uint64_t seed, int64_t length, double depth);

struct fidelity_options {
  std::vector<int64_t> lengths{2048};  // context tokens
  int passages = 3;                    // per length
  int64_t continuation = 64;           // teacher-forced tokens
  uint64_t seed = 0;
};
// Plain-text passages (no chat template) starting at a paragraph of the essays chosen by the
// seed: `length` context tokens then `continuation` tokens; ids "fidelity-L2048-P0".
std::vector<eval_sample> fidelity_samples(const tokenizer& tok, const std::string& text, const fidelity_options& o);

// RULER's released format: one JSON object per line with `input` (the whole prompt) and
// `outputs` (strings that must all appear); optional `index`, `answer_prefix` (appended), and
// `length`. Prompts longer than max_prompt_tokens are cut in the middle. Throws std::runtime_error
// naming the line for a malformed one.
std::vector<eval_sample> jsonl_samples(const tokenizer& tok, const std::string& path, int64_t max_prompt_tokens,
                                       int max_new_tokens, const std::string& task = "jsonl");

// Keeps the first and last max/2 tokens (L-Eval / LongBench / RULER truncation).
std::vector<int32_t> truncate_middle(const std::vector<int32_t>& t, int64_t max_tokens);

// The sample's score of an answer in [0, 1] by its metric (not for fidelity).
double score_answer(const eval_sample& s, const std::string& answer);

}  // namespace kvhost
