// calibrate(): the options checked, the chosen stages run in order, and their results assembled
// into one profile with its provenance.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <stdexcept>

#include "calibrate/sha256.hpp"
#include "calibrate/stage.hpp"
#include "engine/compression.hpp"
#include "kvtrim/calibrate/retrieval_reasoning_score.hpp"
#include "kvtrim/calibrate/semantic_retrieval_score.hpp"

namespace kvhost {

namespace fs = std::filesystem;
using namespace calib;

namespace {

std::string join_lengths(const std::vector<int64_t>& v) {
  std::string s;
  for (auto x : v) s += (s.empty() ? "" : ",") + std::to_string(x);
  return s;
}

std::string first_step_words(const std::string& f) {
  return f == "observed" ? "observed and scored (prefill all but the last prompt token, decode from it; --first-step "
                           "observed)"
                         : "from the prefill's logits, not scored (--first-step prefill)";
}

std::string eps_text(double eps) {
  char b[32];
  std::snprintf(b, sizeof b, "%g", eps);
  return b;
}

}  // namespace

calibration_result calibrate(const model& m, const tokenizer& tok, const std::vector<int32_t>& stop_tokens,
                             const model_identity& id, const calibration_options& opt) {
  const model_config& c = m.config();
  const kvtrim::model_shape shape = kvtrim_shape(c);
  auto has_stage = [&](const char* s) { return std::find(opt.stages.begin(), opt.stages.end(), s) != opt.stages.end(); };
  for (const auto& s : opt.stages)
    if (s != "heads" && s != "reasoning" && s != "layers")
      throw std::invalid_argument("unknown stage '" + s + "' (accepted: heads, reasoning, layers, all)");
  if (opt.stages.empty()) throw std::invalid_argument("no calibration stage chosen");
  if (opt.depths < 1 || opt.depths > 100) throw std::invalid_argument("--depths " + std::to_string(opt.depths) + " must be in [1, 100]");
  if (opt.max_new_tokens < 1 || opt.max_new_tokens > 4096)
    throw std::invalid_argument("--max-new-tokens " + std::to_string(opt.max_new_tokens) + " must be in [1, 4096]");
  if (opt.layer_max_new_tokens < 2)
    throw std::invalid_argument("--layer-max-new-tokens " + std::to_string(opt.layer_max_new_tokens) + " must be >= 2");
  if (opt.layer_prompts < 1) throw std::invalid_argument("--layer-prompts must be >= 1");
  if (opt.retrieval_heads_k < 1 || opt.retrieval_heads_k > c.n_head)
    throw std::invalid_argument("--retrieval-heads " + std::to_string(opt.retrieval_heads_k) + " must be in [1, " +
                                std::to_string(c.n_head) + "]");
  if (opt.srh_span != "answer" && opt.srh_span != "needle")
    throw std::invalid_argument("--srh-span '" + opt.srh_span + "' (accepted: answer, needle)");
  if (opt.first_step != "observed" && opt.first_step != "prefill")
    throw std::invalid_argument("--first-step '" + opt.first_step + "' (accepted: observed, prefill)");
  if (opt.layer_pooling != "avg" && opt.layer_pooling != "max" && opt.layer_pooling != "none")
    throw std::invalid_argument("--layer-pooling '" + opt.layer_pooling + "' (accepted: avg, max, none)");
  if (opt.layer_kernel < 1 || opt.layer_kernel > 4095 || opt.layer_kernel % 2 == 0)
    throw std::invalid_argument("--layer-kernel " + std::to_string(opt.layer_kernel) + " must be odd, in [1, 4095]");
  if (opt.layer_error_at != "o_proj" && opt.layer_error_at != "attention")
    throw std::invalid_argument("--layer-error-at '" + opt.layer_error_at + "' (accepted: o_proj, attention)");
  if (opt.shards < 1 || opt.shard < 0 || opt.shard >= opt.shards)
    throw std::invalid_argument("--shard " + std::to_string(opt.shard) + "/" + std::to_string(opt.shards) +
                                " must be K/N with 0 <= K < N");
  const bool has_base = !opt.base.model.empty() || opt.base.layers > 0;
  if (has_base) opt.base.check_matches(shape);
  const std::vector<named_needle> rneedles = pick_needles(retrieval_needles(), opt.needles, "retrieval");
  const std::vector<named_needle> qneedles = pick_needles(reasoning_needles(), opt.reasoning_needle_names, "reasoning");
  const std::vector<int64_t> qlengths = opt.reasoning_lengths.empty() ? opt.lengths : opt.reasoning_lengths;
  const int qdepths = opt.reasoning_depths > 0 ? opt.reasoning_depths : opt.depths;
  if ((has_stage("heads") || has_stage("reasoning")) && (opt.lengths.empty() || qlengths.empty()))
    throw std::invalid_argument("no calibration lengths given");
  for (const auto* ls : {&opt.lengths, &qlengths})
    for (int64_t len : *ls)
      if (len < 64 || len + opt.max_new_tokens > c.n_ctx)
        throw std::invalid_argument("calibration length " + std::to_string(len) + " outside [64, " +
                                    std::to_string(c.n_ctx - opt.max_new_tokens) + "] (the context " +
                                    std::to_string(c.n_ctx) + " less --max-new-tokens)");
  if (has_stage("layers") && !has_stage("heads") && !(has_base && opt.base.has_semantic_retrieval()))
    throw std::invalid_argument(
        "stage 'layers' needs semantic retrieval heads: run stage 'heads' too, or pass --profile with them");

  calibration_data data(tok, opt);  // reads the data first: missing files fail before any write
  calibration_run cal{m, tok, stop_tokens, opt, data};
  const std::string date = open_resume_dir(opt.resume_dir, id.sha256);

  calibration_result res;
  res.complete = true;
  kvtrim::profile p;
  if (has_base) {
    p = opt.base;
  }
  p.model = id.name.empty() ? c.name : id.name;
  p.model_sha256 = id.sha256;
  p.layers = c.n_layer;
  p.q_heads = c.n_head;
  p.kv_heads = c.n_kv_head;
  const std::string seed_s = std::to_string(opt.seed);

  // ---- stage heads
  if (has_stage("heads")) {
    stage_report rep;
    kvtrim::semantic_retrieval_score total(c.n_layer, c.n_head);
    std::vector<std::vector<double>> span(size_t(c.n_layer), std::vector<double>(size_t(c.n_head), 0.0)), copy = span;
    const needle_grid grid{"heads", rneedles, opt.lengths, opt.depths, 0, 7, true, "ROUGE-1 recall"};
    res.complete = run_needle_stage(cal, grid, rep, [&](const record& r) {
      total.merge(kvtrim::semantic_retrieval_score::from_json(r.state));
      if (!r.kept) return;
      const auto sm = kvtrim::detail::json_matrix(r.extra.at("span_mass"), "span_mass");
      const auto cp = kvtrim::detail::json_matrix(r.extra.at("copy_score"), "copy_score");
      for (size_t l = 0; l < span.size(); ++l)
        for (size_t h = 0; h < span[l].size(); ++h) {
          span[l][h] += sm.at(l).at(h);
          copy[l][h] += cp.at(l).at(h);
        }
    });
    if (res.complete) {
      if (rep.kept == 0)
        throw std::runtime_error("stage heads: no trial was kept (no answer reached ROUGE-1 recall > 0.5); "
                                 "try shorter --lengths");
      total.to_profile(p);
      for (auto& row : span)
        for (double& x : row) x /= static_cast<double>(rep.kept);
      for (auto& row : copy)
        for (double& x : row) x /= static_cast<double>(rep.kept);
      res.span_mass = span;
      res.copy_score = copy;
      std::string nd;
      for (const auto& n : rneedles) nd += (nd.empty() ? "" : " | ") + n.name + ": " + n.nd.fact;
      p.provenance["semantic_retrieval_needles"] = nd;
      p.provenance["semantic_retrieval_settings"] =
          "lengths " + join_lengths(opt.lengths) + "; depths " + std::to_string(opt.depths) +
          " (0..100%, moved back to a sentence end); greedy, max_new_tokens " + std::to_string(opt.max_new_tokens) +
          "; keep: ROUGE-1 recall of the answer > 0.5; credited span: " +
          (opt.srh_span == "answer" ? "the answer's tokens in the needle" : "the whole needle") +
          " (--srh-span " + opt.srh_span + "); first answer step: " + first_step_words(opt.first_step) + "; " +
          std::to_string(rep.planned) + " trials, " + std::to_string(rep.kept) + " kept; seed " + seed_s;
    }
    res.stages.push_back(rep);
  }

  // ---- stage reasoning
  // A shard runs its part of reasoning even though its heads stage is (by design) incomplete.
  if (has_stage("reasoning") && (res.complete || opt.shards > 1)) {
    stage_report rep;
    kvtrim::retrieval_reasoning_score total(c.n_layer, c.n_head);
    const needle_grid grid{"reasoning", qneedles, qlengths, qdepths, 11, 5, false, "F1"};
    const bool heads_complete = res.complete;
    res.complete = run_needle_stage(cal, grid, rep, [&](const record& r) {
      total.merge(kvtrim::retrieval_reasoning_score::from_json(r.state));
    }) && heads_complete;
    if (res.complete) {
      if (rep.kept == 0)
        throw std::runtime_error("stage reasoning: no trial was kept (no answer reached F1 > 0.5); try shorter lengths");
      total.to_profile(p);
      std::string nd;
      for (const auto& n : qneedles) nd += (nd.empty() ? "" : " | ") + n.name + ": " + n.nd.fact + " Q: " + n.nd.question;
      p.provenance["retrieval_reasoning_needles"] = nd;
      p.provenance["retrieval_reasoning_settings"] =
          "lengths " + join_lengths(qlengths) + "; depths " + std::to_string(qdepths) + "; greedy, max_new_tokens " +
          std::to_string(opt.max_new_tokens) + "; keep: answer F1 (first output line) > 0.5; score a_i/N; first "
          "answer step: " + first_step_words(opt.first_step) + "; " + std::to_string(rep.planned) + " trials, " +
          std::to_string(rep.kept) + " kept; seed " + seed_s;
    }
    res.stages.push_back(rep);
  }

  // ---- stage layers
  if (has_stage("layers") && res.complete) {
    kvtrim::profile heads;
    heads.model = p.model;
    heads.layers = c.n_layer;
    heads.q_heads = c.n_head;
    heads.kv_heads = c.n_kv_head;
    heads.semantic_retrieval = p.semantic_retrieval;
    stage_report rep;
    kvtrim::layer_eviction_error total(c.n_layer, opt.eps);
    res.complete = run_layer_stage(cal, heads, rep, total);
    if (res.complete) {
      total.to_profile(p);
      p.provenance["layer_error_settings"] =
          "compressed cache: compresskv-uniform, " + std::to_string(opt.compressed_tokens) + " tokens per KV head, window " +
          std::to_string(opt.window) + ", top-" + std::to_string(opt.retrieval_heads_k) +
          " semantic retrieval heads per layer" + (has_stage("heads") ? "" : " (from the given --profile)") +
          ", window-score pooling " + opt.layer_pooling + " kernel " + std::to_string(opt.layer_kernel) +
          "; outputs compared " + (opt.layer_error_at == "o_proj" ? "after o_proj" : "before o_proj") +
          " (--layer-error-at " + opt.layer_error_at + "), eps " + eps_text(opt.eps) + "; " +
          std::to_string(opt.layer_prompts) +
          " prompts per dataset cut to " + std::to_string(opt.layer_prompt_tokens) +
          " tokens; greedy, max_new_tokens " + std::to_string(opt.layer_max_new_tokens) + "; seed " + seed_s;
    }
    res.stages.push_back(rep);
  }

  if (!res.complete) return res;
  // A stage not run here keeps the --profile's scores, and says so: its settings lines are that
  // run's, not this one's (whose date replaces the profile's). A --profile of the same date is this
  // run's own, finished stage by stage on one resume directory.
  for (const auto& [stage, key] : {std::pair<const char*, const char*>{"heads", "semantic_retrieval"},
                                   {"reasoning", "retrieval_reasoning"}, {"layers", "layer_error"}}) {
    const std::string from = std::string(key) + "_from";
    if (has_stage(stage)) {
      p.provenance.erase(from);
    } else if (const auto d = opt.base.provenance.find("date");
               has_base && !p.provenance.count(from) && p.provenance.count(key) &&
               (d == opt.base.provenance.end() || d->second != date)) {  // same date: the same run, resumed
      p.provenance[from] = std::string("not measured by this run: kept from the --profile of ") +
                           (d == opt.base.provenance.end() ? std::string("unknown date") : d->second);
    }
  }
  p.provenance["tool"] = calibration_tool_version;
  p.provenance["date"] = date;
  p.provenance["model_file"] = fs::path(id.path).filename().string() + " (sha256 " +
                               (id.sha256.empty() ? std::string("unknown") : id.sha256) + ")";
  std::string files;
  for (const auto& f : data.files()) {
    std::error_code ec;
    const auto size = fs::file_size(f, ec);
    files += (files.empty() ? "" : "; ") + std::string("leval/") + fs::path(f).filename().string() + " (" +
             std::to_string(ec ? 0 : size) + " bytes, sha256 " + sha256_file(f) + ")";
  }
  p.provenance["data"] = files;
  p.validate();
  res.prof = std::move(p);
  return res;
}

}  // namespace kvhost
