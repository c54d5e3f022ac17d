// `kvtrim calibrate` on the reference host: the three calibration stages of docs/CALIBRATION.md
// (semantic retrieval heads, retrieval-reasoning heads, layer eviction errors) run on a real
// model, feeding the library's accumulators (include/kvtrim/calibrate/) from a decode observer.
// Haystacks and prompts come only from the L-Eval calibration files (never evaluation data).
// Every trial's result is appended to a resume directory, so an interrupted run continues where
// it stopped and ends with the same profile as one uninterrupted run. The stages and their
// resume files are one file each in this folder (docs/CALIBRATION.md, "The host side").
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "calibrate/sha256.hpp"
#include "engine/model.hpp"
#include "engine/needle.hpp"
#include "engine/tokenizer.hpp"
#include "kvtrim/profile/profile.hpp"

namespace kvhost {

// Written into every profile's provenance ("tool").
inline constexpr const char* calibration_tool_version = "kvtrim calibrate 0.1.0";

// Needles written for kvtrim (not CompressKV's or HeadKV's, not the demo's).
const std::vector<named_needle>& retrieval_needles();  // stage "heads": fact sentence + question
const std::vector<named_needle>& reasoning_needles();  // stage "reasoning": two entities + comparison

// How the needle stages' prompts are built (engine/needle.hpp): the fact spliced in as tokens, so
// its span is exact, and "Answer in one sentence." after the question.
needle_layout calibration_needle_layout();

// The calibration files: <data_dir>/leval/<name>.jsonl.
const std::vector<std::string>& calibration_datasets();  // gov_report_summ, patent_summ, news_summ, financial_qa
std::string default_calibration_data_dir();               // KVTRIM_SOURCE_DIR "/../shared/data"

struct calibration_options {
  std::vector<std::string> stages = {"heads", "reasoning", "layers"};
  // Stage "heads".
  std::vector<int64_t> lengths = {512, 1024, 2048, 4096};  // prompt tokens (+ max_new_tokens <= context)
  int depths = 10;                                               // 0 % ... 100 %, evenly
  std::vector<std::string> needles;                              // names; empty = all
  // Stage "reasoning" (empty lengths / depths 0 = those of stage "heads").
  std::vector<int64_t> reasoning_lengths;
  int reasoning_depths = 0;
  std::vector<std::string> reasoning_needle_names;  // empty = all
  int max_new_tokens = 50;
  // How the needle stages observe a trial (docs/CALIBRATION.md, "Choices"). Defaults: as the
  // official detectors (CompressKV's semantic_retrieval_head_detection.py, HeadKV's
  // retrieval_head_detection_r2.py, both after Wu et al.'s retrieval_head_detection.py).
  //  srh_span (stage heads): the prompt positions the semantic-retrieval score credits:
  //    "answer" (the answer's tokens inside the needle, as the official code) or "needle" (the
  //    whole fact sentence, kvtrim's earlier choice).
  //  first_step (both stages): "observed" (prefill all but the last prompt token, then decode
  //    from it, so the step that generates the first answer token is observed and scored, as the
  //    official code) or "prefill" (kvtrim's earlier: the first token from the prefill's logits,
  //    its step never observed).
  std::string srh_span = "answer";
  std::string first_step = "observed";
  // Stage "layers": prompts per dataset, each cut to at most layer_prompt_tokens tokens.
  int layer_prompts = 2;
  int64_t layer_prompt_tokens = 2048;
  int layer_max_new_tokens = 24;
  int64_t compressed_tokens = 32;  // the uniform budget of the compressed cache
  int retrieval_heads_k = 4;       // semantic retrieval heads per layer that choose its tokens
  int window = 8;                  // observation window of that compression
  // That compression's window-score pooling: CompressKV's code runs its layer-error pass with its
  // own cluster, avg pooling, kernel 5 (kvtrim's earlier: max 7, KVCache-Factory's).
  std::string layer_pooling = "avg";
  int layer_kernel = 5;
  // Where the layer's output is compared: "o_proj" (after the attention output projection, as
  // CompressKV's modeling_*_new.py) or "attention" (the heads' concatenated output before it,
  // kvtrim's earlier choice).
  std::string layer_error_at = "o_proj";
  double eps = 1e-6;
  std::uint64_t seed = 0;
  std::string data_dir;  // empty = default_calibration_data_dir()
  std::string resume_dir;  // empty = no resume files
  // Stop after this many newly run trials (< 0: no limit); the result is then incomplete and
  // no profile is made. For tests and for splitting a long run.
  int64_t max_trials = -1;
  // Stages heads and reasoning run only the trials whose index in their stage's grid is
  // shard (mod shards); with shards > 1 the run is never complete, no profile is made and stage
  // layers is skipped. Shards in separate resume directories run in parallel; their .jsonl files
  // concatenated make one resume directory whose rerun without a shard reuses every trial.
  int shard = 0, shards = 1;
  bool progress = true;  // one line per trial on stderr, with ETA
  // An earlier profile of this model (empty model = none): the stages not run in this call are
  // taken from it, and stage "layers" reads its semantic retrieval heads when "heads" does not run.
  kvtrim::profile base;
};

// What the model file is, for the profile.
struct model_identity {
  std::string name;    // e.g. general.name
  std::string path;
  std::string sha256;  // empty: not known
};

struct stage_report {
  std::string stage;
  int64_t planned = 0;  // trials (samples) of the stage
  int64_t run = 0;      // run in this call
  int64_t reused = 0;   // read from the resume directory
  int64_t kept = 0;
  double seconds = 0;   // wall time of the trials run in this call
  double trial_seconds = 0;  // sum of every trial's own time, reused ones included
};

struct calibration_result {
  bool complete = false;  // false: stopped by max_trials, or one shard of a sharded run
  kvtrim::profile prof;   // valid only when complete
  std::vector<stage_report> stages;
  // Stage "heads" comparisons, [layer][q_head] means over kept trials: attention mass over the
  // needle at every step (no token match), and Wu et al.'s copy score (the head's most attended
  // position is a needle token equal to the generated one).
  std::vector<std::vector<double>> span_mass;
  std::vector<std::vector<double>> copy_score;
};

// Runs the chosen stages. Throws kvtrim::error / std::runtime_error for bad options, missing
// data, or a resume directory written with other settings.
calibration_result calibrate(const model& m, const tokenizer& tok, const std::vector<int32_t>& stop_tokens,
                             const model_identity& id, const calibration_options& opt);

}  // namespace kvhost
