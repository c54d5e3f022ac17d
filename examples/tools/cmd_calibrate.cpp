// kvtrim calibrate: a model's profile (semantic retrieval heads, retrieval-reasoning heads, layer
// eviction errors) measured on the reference host. Stages and data: docs/CALIBRATION.md.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <numeric>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "args.hpp"
#include "common/log_file.hpp"
#include "commands.hpp"
#include "calibrate/calibration.hpp"
#include "engine/compression.hpp"
#include "host_setup.hpp"
#include "kvtrim/profile/json.hpp"

namespace kvtools {

namespace {
const char* kHelp =
    "usage: kvtrim calibrate [--model GGUF] --out P.json [--stage heads|reasoning|layers|all]\n"
    "                        [--lengths N,N,...] [--depths D] [--needles NAME,...]\n"
    "                        [--reasoning-lengths N,...] [--reasoning-depths D] [--reasoning-needles NAME,...]\n"
    "                        [--max-new-tokens 50] [--layer-prompts 2] [--layer-prompt-tokens 2048]\n"
    "                        [--layer-max-new-tokens 24] [--compressed-tokens 32] [--retrieval-heads 4]\n"
    "                        [--srh-span answer|needle] [--first-step observed|prefill]\n"
    "                        [--layer-pooling avg|max|none] [--layer-kernel 5] [--layer-error-at o_proj|attention]\n"
    "                        [--seed S] [--resume-dir D] [--max-trials K] [--shard K/N] [--profile P.json]\n"
    "                        [--data-dir DIR] [--threads T] [--json] [--quiet]\n"
    "\n"
    "Runs probe prompts on the reference CPU host and writes the model's profile (whole or not at all).\n"
    "  --stage S            heads: semantic retrieval heads (CompressKV); reasoning: retrieval-reasoning\n"
    "                       heads (HeadKV-R2); layers: layer eviction errors (CompressKV); all (default)\n"
    "  --lengths            prompt lengths of the needle trials (default 512,1024,2048,4096,8192 cut\n"
    "                       to the context; the issue's full scale is >= 10 lengths, see docs)\n"
    "  --depths D           needle depths 0%..100% evenly (default 10), moved back to a sentence end\n"
    "  --needles            retrieval needles by name (default all: lemon-cake, observatory,\n"
    "                       lighthouse, horse, clock); --reasoning-needles: collectors, bridges,\n"
    "                       captains\n"
    "  --reasoning-lengths / --reasoning-depths   stage reasoning's grid (default: the heads grid)\n"
    "  --max-new-tokens N   greedy tokens per needle trial (default 50)\n"
    "  --layer-prompts N    stage layers: prompts per dataset (default 2), each cut to\n"
    "                       --layer-prompt-tokens (default 2048), --layer-max-new-tokens (default 24)\n"
    "  --compressed-tokens  the compressed cache's uniform budget for layer errors (default 32)\n"
    "  --srh-span S         stage heads credits the answer's tokens inside the needle (answer, default,\n"
    "                       as CompressKV's code) or the whole needle sentence (needle, kvtrim's earlier)\n"
    "  --first-step F       needle stages: observed (default, as the official detectors: prefill all but\n"
    "                       the last prompt token, so the first answer token's step is scored) or prefill\n"
    "                       (kvtrim's earlier: the first token from the prefill's logits, not scored)\n"
    "  --layer-pooling P / --layer-kernel K   stage layers' compression pooling (default avg 5, as\n"
    "                       CompressKV's code; kvtrim's earlier: max 7)\n"
    "  --layer-error-at A   stage layers compares outputs after o_proj (default, as CompressKV's code)\n"
    "                       or before it (attention, kvtrim's earlier)\n"
    "                       Every setting is in the profile's provenance and in the resume keys.\n"
    "  --profile P.json     an earlier profile of this model: stages not run are kept from it, and\n"
    "                       stage layers alone reads its semantic retrieval heads\n"
    "  --resume-dir D       every finished trial is appended to D; a rerun skips them and gives the\n"
    "                       same profile as one uninterrupted run\n"
    "  --max-trials K       stop after K new trials (no profile is written; rerun to continue)\n"
    "  --shard K/N          stages heads and reasoning run only trials K, K+N, K+2N, ... of their grids\n"
    "                       (0 <= K < N); no profile is written and stage layers is skipped. Run the N\n"
    "                       shards in parallel, each with its own --resume-dir, concatenate their .jsonl\n"
    "                       files into one --resume-dir and rerun without --shard (scripts/calibrate_parallel.sh)\n"
    "  --data-dir DIR       folder holding leval/{gov_report_summ,patent_summ,news_summ,financial_qa}.jsonl\n"
    "                       (default: the source tree's ../shared/data)\n"
    "  --seed S             haystack order and layer prompts (default 0)\n"
    "  --threads T          OpenMP threads (default: OMP_NUM_THREADS)\n"
    "  --json               print a summary (stages, counts, times, per-layer top heads, comparison\n"
    "                       scores) as one JSON object on stdout\n"
    "Progress (one line per trial, with ETA) goes to stderr unless --quiet.\n";

std::vector<int64_t> parse_lengths(const args& a, const std::string& name, const std::vector<int64_t>& def) {
  if (!a.has(name)) return def;
  std::vector<int64_t> out;
  for (const auto& s : a.list(name)) out.push_back(args::parse_int_in(name, s, 1, k_max_tokens));
  if (out.empty()) throw usage_error("--" + name + " needs at least one length");
  return out;
}

kvtrim::json::value matrix_json(const std::vector<std::vector<double>>& m) { return kvtrim::detail::json_of(m); }

// The k highest-scoring heads of each layer, best first (ties to the lower id).
std::vector<std::vector<int>> top_heads(const std::vector<std::vector<double>>& s, int k) {
  std::vector<std::vector<int>> out;
  for (const auto& row : s) {
    std::vector<int> ids(row.size());
    std::iota(ids.begin(), ids.end(), 0);
    std::stable_sort(ids.begin(), ids.end(), [&](int a, int b) { return row[size_t(a)] > row[size_t(b)]; });
    ids.resize(std::min<size_t>(ids.size(), size_t(k)));
    out.push_back(ids);
  }
  return out;
}

kvtrim::json::value heads_json(const std::vector<std::vector<int>>& h) {
  kvtrim::json::array_t a;
  for (const auto& row : h) {
    kvtrim::json::array_t r;
    for (int x : row) r.emplace_back(x);
    a.emplace_back(std::move(r));
  }
  return kvtrim::json::value(std::move(a));
}

}  // namespace

int cmd_calibrate(int argc, char** argv) {
  args a(argc, argv, 2,
         {"model", "out", "stage", "lengths", "depths", "needles", "reasoning-lengths", "reasoning-depths",
          "reasoning-needles", "max-new-tokens", "layer-prompts", "layer-prompt-tokens", "layer-max-new-tokens",
          "compressed-tokens", "retrieval-heads", "seed", "resume-dir", "max-trials", "shard", "profile", "data-dir",
          "threads", "srh-span", "first-step", "layer-pooling", "layer-kernel", "layer-error-at"},
         {"json", "quiet"});
  if (a.help()) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  if (!a.positional().empty()) throw usage_error("unexpected argument '" + a.positional()[0] + "'");
  const std::string out = a.required("out");
  kvhost::calibration_options o;
  const std::string stage = a.str("stage", "all");
  if (stage == "all") o.stages = {"heads", "reasoning", "layers"};
  else if (stage == "heads" || stage == "reasoning" || stage == "layers") o.stages = {stage};
  else throw usage_error("--stage '" + stage + "' is not one of heads, reasoning, layers, all");
  auto int_opt = [&](const char* name, long long def, long long lo, long long hi) {
    return a.integer_in(name, def, lo, hi);
  };
  o.depths = static_cast<int>(int_opt("depths", 10, 1, 100));
  o.reasoning_depths = static_cast<int>(int_opt("reasoning-depths", 0, 0, 100));
  o.needles = a.list("needles");
  o.reasoning_needle_names = a.list("reasoning-needles");
  o.max_new_tokens = static_cast<int>(int_opt("max-new-tokens", 50, 1, 4096));
  o.layer_prompts = static_cast<int>(int_opt("layer-prompts", 2, 1, 1000));
  o.layer_prompt_tokens = int_opt("layer-prompt-tokens", 2048, 128, 1 << 20);
  o.layer_max_new_tokens = static_cast<int>(int_opt("layer-max-new-tokens", 24, 2, 4096));
  o.compressed_tokens = int_opt("compressed-tokens", 32, 1, 1 << 20);
  o.retrieval_heads_k = static_cast<int>(int_opt("retrieval-heads", 4, 1, 1024));
  o.srh_span = a.str("srh-span", o.srh_span);
  o.first_step = a.str("first-step", o.first_step);
  o.layer_pooling = a.str("layer-pooling", o.layer_pooling);
  o.layer_kernel = static_cast<int>(int_opt("layer-kernel", o.layer_kernel, 1, 4095));
  o.layer_error_at = a.str("layer-error-at", o.layer_error_at);
  o.seed = static_cast<std::uint64_t>(int_opt("seed", 0, 0, (1LL << 53)));
  o.resume_dir = a.str("resume-dir");
  o.max_trials = int_opt("max-trials", -1, -1, 1LL << 40);
  if (a.has("shard")) {
    const std::string sh = a.str("shard");
    const size_t slash = sh.find('/');
    if (slash == std::string::npos) throw usage_error("--shard '" + sh + "' is not K/N");
    o.shards = static_cast<int>(args::parse_int_in("shard", sh.substr(slash + 1), 1, 4096));
    o.shard = static_cast<int>(args::parse_int_in("shard", sh.substr(0, slash), 0, o.shards - 1));
  }
  o.data_dir = a.str("data-dir");
  o.progress = !a.flag("quiet");
  if (a.has("threads")) {
    const long long t = int_opt("threads", 1, 1, 1024);
#ifdef _OPENMP
    omp_set_num_threads(static_cast<int>(t));
#else
    (void)t;
#endif
  }

  // Every output path before any long work: a run must not fail at its end for want of a folder.
  kvhost::check_writable_file(out, "--out");
  if (!o.resume_dir.empty()) kvhost::check_writable_dir(o.resume_dir, "--resume-dir", true);

  const loaded_host h = load_host(a.str("model"), "", a.flag("quiet"));
  const auto& c = h.mdl->config();
  // Default lengths: powers of two from 512 up to the context (minus room for the answer).
  std::vector<int64_t> def;
  for (int64_t n = 512; n + o.max_new_tokens <= c.n_ctx; n *= 2) def.push_back(n);
  if (def.empty()) def.push_back(c.n_ctx / 2);
  o.lengths = parse_lengths(a, "lengths", def);
  o.reasoning_lengths = parse_lengths(a, "reasoning-lengths", {});
  if (a.has("profile")) {
    o.base = kvtrim::load_profile(a.str("profile"));
    o.base.check_matches(kvhost::kvtrim_shape(c));
  }

  kvhost::model_identity id;
  id.name = c.name.empty() ? std::filesystem::path(h.path).stem().string() : c.name;
  id.path = h.path;
  if (!a.flag("quiet")) std::fprintf(stderr, "hashing %s ...\n", h.path.c_str());
  id.sha256 = kvhost::sha256_file(h.path);
  if (!o.base.model_sha256.empty() && o.base.model_sha256 != id.sha256)
    throw std::runtime_error("--profile " + a.str("profile") + " was made from model sha256 " + o.base.model_sha256 +
                             ", not this file's " + id.sha256);

  const kvhost::calibration_result r = kvhost::calibrate(*h.mdl, *h.tok, h.stops, id, o);
  if (!r.complete && o.shards > 1) {
    std::fprintf(stderr, "shard %d/%d done; nothing written. Merge the shards' resume directories and rerun "
                         "without --shard.\n", o.shard, o.shards);
  } else if (!r.complete) {
    std::fprintf(stderr, "stopped after %lld new trials (--max-trials); nothing written. Rerun with the same "
                         "--resume-dir to continue.\n", static_cast<long long>(o.max_trials));
  } else {
    kvtrim::save_profile(r.prof, out);
    if (!a.flag("quiet")) std::fprintf(stderr, "wrote %s\n", out.c_str());
  }
  if (a.flag("json")) {
    kvtrim::json::value v;
    v.set("complete", r.complete);
    v.set("profile", r.complete ? kvtrim::json::value(out) : kvtrim::json::value());
    kvtrim::json::array_t st;
    for (const auto& s : r.stages) {
      kvtrim::json::value x;
      x.set("stage", s.stage);
      x.set("planned", s.planned);
      x.set("run", s.run);
      x.set("reused", s.reused);
      x.set("kept", s.kept);
      x.set("seconds", s.seconds);
      x.set("trial_seconds", s.trial_seconds);
      st.push_back(std::move(x));
    }
    v.set("stages", kvtrim::json::value(std::move(st)));
    if (r.complete) {
      const int k = o.retrieval_heads_k;
      if (r.prof.has_semantic_retrieval()) {
        v.set("top_semantic_retrieval", heads_json(top_heads(r.prof.semantic_retrieval, k)));
        v.set("semantic_retrieval", matrix_json(r.prof.semantic_retrieval));
      }
      if (!r.span_mass.empty()) {
        v.set("top_span_mass", heads_json(top_heads(r.span_mass, k)));
        v.set("top_copy_score", heads_json(top_heads(r.copy_score, k)));
        v.set("span_mass", matrix_json(r.span_mass));
        v.set("copy_score", matrix_json(r.copy_score));
      }
      if (r.prof.has_retrieval_reasoning()) {
        v.set("top_retrieval_reasoning", heads_json(top_heads(r.prof.retrieval_reasoning, k)));
        v.set("retrieval_reasoning", matrix_json(r.prof.retrieval_reasoning));
      }
      if (r.prof.has_layer_error()) v.set("layer_error", kvtrim::detail::json_of(r.prof.layer_error));
    }
    std::printf("%s\n", kvtrim::json::dump(v, 1).c_str());
  }
  return 0;
}

}  // namespace kvtools
