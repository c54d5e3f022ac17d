// Stages "heads" and "reasoning": a needle in a calibration haystack, decoded greedily with the
// full cache while an observer feeds the accumulators the attention of every step.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>

#include "calibrate/stage.hpp"
#include "calibrate/trial_keys.hpp"
#include "engine/needle.hpp"
#include "kvtrim/calibrate/retrieval_reasoning_score.hpp"
#include "kvtrim/calibrate/semantic_retrieval_score.hpp"

namespace kvhost {

needle_layout calibration_needle_layout() { return {needle_splice::tokens, "Answer in one sentence."}; }

namespace calib {

namespace kj = kvtrim::json;

namespace {

double depth_of(int i, int depths) { return depths == 1 ? 0.5 : static_cast<double>(i) / (depths - 1); }

// "context + question": the needle at `depth` of a haystack from record `start`, spliced in as
// tokens so its span is exact; the assistant's turn primed with the needle's answer prefix.
needle_prompt probe_prompt(calibration_run& cal, const named_needle& nd, int64_t target, double depth, size_t start) {
  const model_config& cfg = cal.m.config();
  const haystack_tokens hay = [&](int64_t n) {
    if (target > cfg.n_ctx - cal.opt.max_new_tokens)
      throw std::invalid_argument("calibration length " + std::to_string(target) + " + " +
                                  std::to_string(cal.opt.max_new_tokens) + " new tokens exceeds the model context of " +
                                  std::to_string(cfg.n_ctx));
    return cal.data.haystack(start, n);
  };
  try {
    return build_needle_prompt(cal.tok, hay, target, depth, nd.nd, calibration_needle_layout());
  } catch (const needle_prompt_too_short& e) {
    throw std::invalid_argument("calibration length " + std::to_string(target) + " is too short for needle '" +
                                nd.name + "' (its question and fact take " + std::to_string(e.overhead) + " tokens)");
  }
}

// softmax(q·Kᵀ/√d) of every query head over this layer's rows (all KV heads hold the same
// number with a full cache), into attn [n_head][n].
int64_t attention_rows(const model_config& cfg, int layer, const float* q, const kv_store& cache,
                       std::vector<float>& attn) {
  const int hd = cfg.head_dim, G = cfg.group();
  const int64_t n = cache.length(layer, 0);
  attn.resize(static_cast<size_t>(cfg.n_head * n));
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  for (int h = 0; h < cfg.n_head; ++h) {
    const float* K = cache.k(layer, h / G);
    const float* qh = q + h * hd;
    float* row = attn.data() + static_cast<int64_t>(h) * n;
    float mx = -INFINITY;
    for (int64_t t = 0; t < n; ++t) {
      float s = 0;
      const float* kt = K + t * hd;
      for (int i = 0; i < hd; ++i) s += qh[i] * kt[i];
      row[t] = s * scale;
      mx = std::max(mx, row[t]);
    }
    double sum = 0;
    for (int64_t t = 0; t < n; ++t) sum += (row[t] = std::exp(row[t] - mx));
    const float inv = static_cast<float>(1.0 / sum);
    for (int64_t t = 0; t < n; ++t) row[t] *= inv;
  }
  return n;
}

int32_t argmax_of(const std::vector<float>& v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

}  // namespace

std::pair<int64_t, int64_t> answer_token_span(const tokenizer& tok, const std::vector<int32_t>& tokens,
                                              int64_t span_begin, int64_t span_end, const std::string& answer) {
  if (span_begin < 0 || span_end > static_cast<int64_t>(tokens.size()) || span_begin >= span_end)
    throw std::invalid_argument("answer_token_span: bad needle span");
  std::string text;
  std::vector<size_t> start;  // each token's first character in `text`
  for (int64_t i = span_begin; i < span_end; ++i) {
    start.push_back(text.size());
    text += tok.decode({tokens[static_cast<size_t>(i)]});
  }
  const size_t at = text.find(answer);
  if (answer.empty() || at == std::string::npos)
    throw std::invalid_argument("answer_token_span: the answer '" + answer + "' is not in the needle '" + text + "'");
  int64_t b = -1, e = -1;
  for (size_t j = 0; j < start.size(); ++j) {
    const size_t lo = start[j], hi = j + 1 < start.size() ? start[j + 1] : text.size();
    if (hi > at && lo < at + answer.size()) {  // the token's characters overlap the answer's
      if (b < 0) b = span_begin + static_cast<int64_t>(j);
      e = span_begin + static_cast<int64_t>(j) + 1;
    }
  }
  return {b, e};
}

std::string needle_settings_suffix(const calibration_options& opt, bool semantic) {
  std::string s;
  if (semantic && opt.srh_span != "needle") s += "|span=" + opt.srh_span;
  if (opt.first_step != "prefill") s += "|first=" + opt.first_step;
  return s;
}

namespace {

// One needle trial with the full cache: greedy decode, the observer feeding the accumulators.
// `semantic` chooses the stage: true = heads (semantic score + comparisons), false = reasoning.
record run_needle_trial(calibration_run& cal, const std::string& key, const needle& nd,
                        const needle_prompt& pr, bool semantic) {
  const auto t0 = clock_type::now();
  const model_config& cfg = cal.m.config();
  const int L = cfg.n_layer, H = cfg.n_head;
  kvtrim::semantic_retrieval_score srh(L, H);
  kvtrim::retrieval_reasoning_score rr(L, H);
  std::vector<double> span_mass(static_cast<size_t>(L * H), 0.0), copy(static_cast<size_t>(L * H), 0.0);
  std::vector<int64_t> top(static_cast<size_t>(L * H), -1);
  std::vector<float> attn;
  if (semantic) {
    // The positions credited: the answer's tokens inside the needle, or the whole needle.
    const auto cs = cal.opt.srh_span == "answer"
                        ? answer_token_span(cal.tok, pr.tokens, pr.span_begin, pr.span_end, nd.answer)
                        : std::pair<int64_t, int64_t>{pr.span_begin, pr.span_end};
    srh.begin_trial(std::vector<int32_t>(pr.tokens.begin() + cs.first, pr.tokens.begin() + cs.second), cs.first);
  } else
    rr.begin_trial(pr.span_begin, pr.span_end);

  const decode_observer obs = [&](int layer, const float* q, const kv_store& cache, const float*) {
    const int64_t n = attention_rows(cfg, layer, q, cache, attn);
    if (!semantic) {
      rr.on_step(layer, attn.data(), n);
      return;
    }
    srh.observe(layer, attn.data(), n);
    for (int h = 0; h < H; ++h) {
      const float* row = attn.data() + static_cast<int64_t>(h) * n;
      double mass = 0;
      for (int64_t i = pr.span_begin; i < pr.span_end; ++i) mass += row[i];
      span_mass[static_cast<size_t>(layer * H + h)] += mass;
      top[static_cast<size_t>(layer * H + h)] = std::max_element(row, row + n) - row;
    }
  };

  // After each step the generated token decides which of the step's attention counted.
  std::function<void(int32_t)> score_step;
  if (semantic) score_step = [&](int32_t next) {
    srh.end_step(next);
    for (size_t i = 0; i < top.size(); ++i) {
      const int64_t t = top[i];
      if (t >= pr.span_begin && t < pr.span_end && pr.tokens[static_cast<size_t>(t)] == next) copy[i] += 1;
    }
  };
  kv_store cache;
  std::vector<float> first_logits;
  if (cal.opt.first_step == "observed") {
    // As the official detectors: prefill all but the last prompt token, then decode from it, so
    // the step that generates the first answer token is observed and scored like every later one.
    const std::vector<int32_t> head(pr.tokens.begin(), pr.tokens.end() - 1);
    cal.m.prefill(head, cache);
    first_logits = cal.m.decode_step(pr.tokens.back(), cache, obs);
    if (score_step) score_step(argmax_of(first_logits));
  } else {
    first_logits = cal.m.prefill(pr.tokens, cache).logits;
  }
  const std::vector<int32_t> gen =
      cal.m.decode_greedy(cache, first_logits, cal.opt.max_new_tokens, cal.stops, obs, score_step).tokens;
  record r;
  r.key = key;
  r.output = cal.tok.decode(std::vector<int>(gen.begin(), gen.end()), true);
  if (semantic) {
    r.quality = rouge1_recall(r.output, nd.answer);
  } else {
    const std::string first_line = r.output.substr(0, r.output.find('\n'));
    r.quality = word_f1(first_line, nd.answer);
  }
  r.kept = r.quality > 0.5;
  if (semantic) {
    srh.end_trial(r.kept);
    r.state = srh.to_json();
    kj::value ex;
    auto mat = [&](const std::vector<double>& flat) {
      std::vector<std::vector<double>> m(static_cast<size_t>(L));
      for (int l = 0; l < L; ++l) m[size_t(l)].assign(flat.begin() + l * H, flat.begin() + (l + 1) * H);
      return kvtrim::detail::json_of(m);
    };
    ex.set("span_mass", mat(span_mass));
    ex.set("copy_score", mat(copy));
    r.extra = ex;
  } else {
    rr.end_trial(r.kept);
    r.state = rr.to_json();
  }
  r.seconds = std::chrono::duration<double>(clock_type::now() - t0).count();
  return r;
}

}  // namespace

// Keys and haystack starts must stay as they are: resume directories hold them.
bool run_needle_stage(calibration_run& cal, const needle_grid& g, stage_report& rep,
                      const std::function<void(const record&)>& take) {
  const calibration_options& opt = cal.opt;
  stage_run st(g.stage, opt);
  struct plan {
    std::string key;
    size_t needle, start;
    int64_t len;
    int depth;
  };
  std::vector<plan> plans;
  bool complete = true;
  int64_t index = 0;
  for (size_t ni = 0; ni < g.needles.size(); ++ni)
    for (size_t li = 0; li < g.lengths.size(); ++li)
      for (int di = 0; di < g.depths; ++di) {
        // Another shard's trial (interleaved, so every shard gets every length).
        if (index++ % opt.shards != opt.shard) {
          complete = false;
          continue;
        }
        // The haystack slice depends on the trial's place in --needles / --lengths: its start is
        // part of the key, so a reordered or extended list reruns the trials it moved.
        const size_t start = g.first_start + ni * g.needle_step + li * 3 + static_cast<size_t>(di);
        const std::string key = needle_trial_key(g.stage, g.needles[ni].name, g.needles[ni].nd.fact, g.lengths[li], di,
                                                 g.depths, opt.max_new_tokens, opt.seed) +
                                needle_settings_suffix(opt, g.semantic) + "|start=" + std::to_string(start);
        plans.push_back({key, ni, start, g.lengths[li], di});
        st.pg.units_total += static_cast<double>(g.lengths[li]) + 40.0 * opt.max_new_tokens;
      }
  st.pg.total = static_cast<int64_t>(plans.size());
  st.rep.planned = st.pg.total;
  const auto t0 = clock_type::now();
  for (const plan& pl : plans) {
    const named_needle& nd = g.needles[pl.needle];
    bool reused = false;
    const record* r = st.trial(cal, pl.key, reused, [&] {
      const needle_prompt pr = probe_prompt(cal, nd, pl.len, depth_of(pl.depth, g.depths), pl.start);
      return run_needle_trial(cal, pl.key, nd.nd, pr, g.semantic);
    });
    if (!r) {
      complete = false;
      break;
    }
    take(*r);
    st.rep.kept += r->kept;
    char what[200];
    std::snprintf(what, sizeof what, "%s len=%lld depth=%.0f%%: %s (%s %.2f)", nd.name.c_str(),
                  static_cast<long long>(pl.len), 100 * depth_of(pl.depth, g.depths), r->kept ? "kept" : "discarded",
                  g.score, r->quality);
    st.report(*r, what, static_cast<double>(pl.len) + 40.0 * opt.max_new_tokens, reused);
  }
  st.rep.seconds = std::chrono::duration<double>(clock_type::now() - t0).count();
  rep = st.rep;
  return complete;
}

}  // namespace calib
}  // namespace kvhost
