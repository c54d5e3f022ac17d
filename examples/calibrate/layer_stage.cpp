// Stage "layers": how far each layer's attention output moves when its cache is compressed, per
// decode step, on the calibration prompts (docs/CALIBRATION.md, stage 3).
#include <algorithm>
#include <cmath>
#include <map>

#include "calibrate/stage.hpp"
#include "calibrate/trial_keys.hpp"
#include "engine/compression.hpp"
#include "kvtrim/attention/ragged_decode.hpp"
#include "kvtrim/compose/method.hpp"

namespace kvhost::calib {

namespace {

// One sample: prefill with the full cache while a compresskv-uniform compressor (semantic
// retrieval heads, budget compressed_tokens) only records which rows it would keep; then at every
// decode step and layer, the attention output over those rows plus the tokens decoded so far
// against the full cache's.
record run_layer_sample(calibration_run& cal, const std::string& key, const std::string& dataset,
                        const std::vector<int32_t>& prompt, const kvtrim::method& method) {
  const auto t0 = clock_type::now();
  const model_config& cfg = cal.m.config();
  const int L = cfg.n_layer, hd = cfg.head_dim, KV = cfg.n_kv_head;
  const int64_t n = static_cast<int64_t>(prompt.size());
  kvtrim::layer_eviction_error lee(L, cal.opt.eps);
  lee.begin_sample(dataset);
  auto seq = method.begin(n);
  std::vector<std::vector<std::vector<kvtrim::index_t>>> keep(static_cast<size_t>(L));
  const prefill_hook hook = [&](int layer, float* k, float* v, const float* qw, int64_t len, int64_t w) {
    kvtrim::layer_kv<float> kv;
    kv.keys = kvtrim::view3<float>::head_major(k, KV, len, hd);
    kv.values = kvtrim::view3<float>::head_major(v, KV, len, hd);
    kv.queries = kvtrim::view3<const float>::head_major(qw, cfg.n_head, w, hd);
    keep[static_cast<size_t>(layer)] = seq->select(layer, seq->score(layer, kv)).keep;
    return std::vector<int64_t>(static_cast<size_t>(KV), len);  // the cache itself stays full
  };
  std::vector<float> kc, vc, out(static_cast<size_t>(cfg.n_head * hd));
  // After o_proj (as CompressKV's code) the error compares W_o·O_comp with W_o·O_full.
  const bool at_o_proj = cal.opt.layer_error_at == "o_proj";
  std::vector<float> proj_full(static_cast<size_t>(at_o_proj ? cfg.n_embd : 0)), proj_comp(proj_full.size());
  const decode_observer obs = [&](int layer, const float* q, const kv_store& cache, const float* attn_out) {
    const auto& kl = keep[static_cast<size_t>(layer)];
    int64_t rows = 0;
    std::vector<int64_t> off(static_cast<size_t>(KV) + 1, 0);
    for (int g = 0; g < KV; ++g) {
      rows += static_cast<int64_t>(kl[size_t(g)].size()) + cache.length(layer, g) - n;
      off[size_t(g) + 1] = rows;
    }
    kc.resize(static_cast<size_t>(rows * hd));
    vc.resize(kc.size());
    kvtrim::ragged_kv<float> rk;
    rk.row_stride = hd;
    rk.head_dim = hd;
    for (int g = 0; g < KV; ++g) {
      int64_t r = off[size_t(g)];
      auto copy_row = [&](int64_t t) {
        std::copy(cache.k(layer, g) + t * hd, cache.k(layer, g) + (t + 1) * hd, kc.begin() + r * hd);
        std::copy(cache.v(layer, g) + t * hd, cache.v(layer, g) + (t + 1) * hd, vc.begin() + r * hd);
        ++r;
      };
      for (kvtrim::index_t t : kl[size_t(g)]) copy_row(t);
      for (int64_t t = n; t < cache.length(layer, g); ++t) copy_row(t);
      rk.keys.push_back(kc.data() + off[size_t(g)] * hd);
      rk.values.push_back(vc.data() + off[size_t(g)] * hd);
      rk.lengths.push_back(off[size_t(g) + 1] - off[size_t(g)]);
    }
    kvtrim::ragged_decode_attention(q, rk, cfg.group(), 1.0f / std::sqrt(static_cast<float>(hd)), out.data());
    if (at_o_proj) {
      cal.m.project_attention_output(layer, attn_out, proj_full.data());
      cal.m.project_attention_output(layer, out.data(), proj_comp.data());
      lee.on_step(layer, proj_full.data(), proj_comp.data(), static_cast<kvtrim::index_t>(proj_full.size()));
    } else {
      lee.on_step(layer, attn_out, out.data(), static_cast<kvtrim::index_t>(out.size()));
    }
  };
  kv_store cache;
  const std::vector<int32_t> gen =
      cal.m.generate(prompt, cache, cal.opt.layer_max_new_tokens, cal.stops, hook, cal.opt.window, obs).tokens;
  record r;
  r.key = key;
  r.output = cal.tok.decode(std::vector<int>(gen.begin(), gen.end()), true);
  r.kept = true;
  lee.end_sample(true);
  r.state = lee.to_json();
  r.seconds = std::chrono::duration<double>(clock_type::now() - t0).count();
  return r;
}

}  // namespace

bool run_layer_stage(calibration_run& cal, const kvtrim::profile& heads, stage_report& rep,
                     kvtrim::layer_eviction_error& total) {
  const calibration_options& opt = cal.opt;
  const model_config& c = cal.m.config();
  const kvtrim::model_shape shape = kvtrim_shape(c);
  stage_run st("layers", opt);
  kvtrim::method_spec mc;
  mc.name = "compresskv-uniform";
  mc.target = kvtrim::budget::tokens(opt.compressed_tokens);
  mc.window = opt.window;
  mc.params["heads"] = std::to_string(opt.retrieval_heads_k);
  mc.params["pooling"] = opt.layer_pooling;
  mc.params["kernel"] = std::to_string(opt.layer_kernel);
  mc.prof = &heads;
  const kvtrim::method method = kvtrim::make_method(mc, shape);
  // The trial keys name the heads that choose the compressed rows, so other heads rerun them.
  const kvtrim::retrieval_heads sel(heads.semantic_retrieval, opt.retrieval_heads_k);
  std::string head_sets;
  for (int l = 0; l < c.n_layer; ++l)
    for (int h : sel.heads(l, shape)) head_sets += std::to_string(l) + ":" + std::to_string(h) + ",";
  const std::string settings = layer_settings_key(head_sets, opt.compressed_tokens, opt.window,
                                                  opt.layer_prompt_tokens, opt.layer_max_new_tokens, opt.seed) +
                               layer_settings_suffix(opt.layer_pooling, opt.layer_kernel, opt.layer_error_at, opt.eps);
  const auto prompts = cal.data.layer_prompts();
  st.pg.total = static_cast<int64_t>(prompts.size());
  st.rep.planned = st.pg.total;
  for (const auto& [ds, toks] : prompts)
    st.pg.units_total += static_cast<double>(toks.size()) + 40.0 * opt.layer_max_new_tokens;
  std::map<std::string, int> seen;
  bool complete = true;
  const auto t0 = clock_type::now();
  for (const auto& prompt : prompts) {
    const auto& ds = prompt.first;  // not a structured binding: the lambda below captures these (clang)
    const auto& toks = prompt.second;
    const std::string key = layer_trial_key(ds, seen[ds]++, toks, settings);
    bool reused = false;
    const record* r = st.trial(cal, key, reused, [&] { return run_layer_sample(cal, key, ds, toks, method); });
    if (!r) {
      complete = false;
      break;
    }
    total.merge(kvtrim::layer_eviction_error::from_json(r->state));
    ++st.rep.kept;
    st.report(*r, ds + " prompt of " + std::to_string(toks.size()) + " tokens",
              static_cast<double>(toks.size()) + 40.0 * opt.layer_max_new_tokens, reused);
  }
  st.rep.seconds = std::chrono::duration<double>(clock_type::now() - t0).count();
  rep = st.rep;
  return complete;
}

}  // namespace kvhost::calib
