#pragma once
// The registry: every named method, once. An entry is a small struct with the method's name, its
// description (paper, the four roles in words, its own parameters with defaults and ranges, what
// it needs from a profile) and `build`, which composes the four roles from its parameters. The
// runtime front (compose/method.hpp), the CLI, the eval tool, the docs' methods table and the
// Python package all read this list; nothing else names methods.
//
// `build` is a template over the composer so one entry serves every backend: the CPU front passes
// a composer that forms compressor<Sel, Scorer, Alloc>; a backend with its own kernels passes one
// that maps the same role objects onto them. Adding a method: docs/ADDING_A_METHOD.md.
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "kvtrim/allocate/cake_layers.hpp"
#include "kvtrim/allocate/error_aware.hpp"
#include "kvtrim/allocate/head_adaptive.hpp"
#include "kvtrim/allocate/head_pool.hpp"
#include "kvtrim/allocate/pyramid.hpp"
#include "kvtrim/allocate/uniform.hpp"
#include "kvtrim/compose/keep_all.hpp"
#include "kvtrim/compose/params.hpp"
#include "kvtrim/profile/profile.hpp"
#include "kvtrim/score/cake.hpp"
#include "kvtrim/score/chunked.hpp"
#include "kvtrim/score/critical.hpp"
#include "kvtrim/score/expected_attention.hpp"
#include "kvtrim/score/keydiff.hpp"
#include "kvtrim/score/knorm.hpp"
#include "kvtrim/score/misgrouped.hpp"
#include "kvtrim/score/observed_attention.hpp"
#include "kvtrim/score/random.hpp"
#include "kvtrim/score/streaming.hpp"
#include "kvtrim/score/tova.hpp"
#include "kvtrim/score/window_attention.hpp"
#include "kvtrim/select/all_heads.hpp"
#include "kvtrim/select/retrieval_heads.hpp"

namespace kvtrim {

struct method_info {
  std::string name;
  std::string paper;
  std::string head_selector, token_scorer, budget_allocator;  // the roles, in words
  std::vector<param_spec> params;
  bool needs_semantic_retrieval = false;   // profile: semantic-retrieval head scores
  bool needs_retrieval_reasoning = false;  // profile: retrieval-reasoning head scores
  bool needs_layer_error = false;          // profile: layer eviction-error weights
  bool cascades = false;  // re-trims earlier layers (compress_layer needs a layer_store)
  bool evaluated_by_default = false;  // in `kvtrim eval`'s default --methods (the papers' set)
  // Optional layer_kv inputs the host must pass (core/layer_kv.hpp), beyond K, V and the window:
  bool needs_out_proj = false;        // out_proj: W_o per query head (CriticalKV)
  bool needs_attention_sums = false;  // attention_sums: prefill attention column sums (H2O)
  bool needs_prompt_queries = false;  // prompt_queries (pre-RoPE) and rope (Expected Attention)

  bool needs_profile() const {
    return needs_semantic_retrieval || needs_retrieval_reasoning || needs_layer_error;
  }
  const param_spec* param(const std::string& key) const {
    for (const auto& p : params)
      if (p.key == key) return &p;
    return nullptr;
  }
};

// What an entry's build() reads: its checked parameters and the profile (present and matching
// the model whenever the entry says it needs one).
struct build_args {
  const param_set& params;
  const profile* prof = nullptr;

  // The window-attention scorer with this method's pooling and kernel.
  window_attention window(aggregation agg = aggregation::per_kv_head) const {
    window_attention w;
    const std::string& p = params.text("pooling");
    w.pool = p == "avg" ? pooling::avg : p == "max" ? pooling::max : pooling::none;
    w.kernel = static_cast<int>(params.integer("kernel"));
    w.aggregate = agg;
    return w;
  }
};

namespace params {
// Window-score pooling. A method that reproduces one release pools as that release does:
//  - avg, kernel 5 (official_avg5()): compresskv and the methods that are compresskv with one
//    role changed (compresskv-uniform, compresskv-chunk), as CompressKV's release
//    (methods/compresskv/snapkv_utils.py: compresskvCluster / init_compresskv default avgpool,
//    kernel_size 5; longbench/pred_compresskv.py passes --pooling avgpool --kernel_size 5 by
//    default), online and in its layer-error run; and cake, as CAKE's release. kvtrim defaulted
//    these to max 7 before, on the belief that they ran KVCache-Factory's setting; they do not.
//  - max, kernel 7 (pooling()): KVCache-Factory's setting, the code of PyramidKV's and HeadKV's
//    releases: pyramidkv, headkv, and snapkv, adakv and the other SnapKV-style scorers. Those
//    are unchanged: kvtrim's snapkv / adakv score per KV head (GQA groups summed, K never
//    repeated), not the per-query-head selection of SnapKV's and Ada-KV's releases, so they are
//    not reproductions of those releases whose pooling should follow (SnapKV's pools avg 5).
// Note that CompressKV's evaluation script passes its avg-5 default to every method it compares,
// so its paper's conditions are `--pooling avg --kernel 5` for all methods; and max 7 did better
// than avg 5 for snapkv and compresskv on 5 needles here (docs/RESULTS.md "Pooling"), a
// difference of 5 prompts. Either setting is one `--pooling` / `--kernel` away.
inline std::vector<param_spec> pooling_with(const char* pool, const char* kernel, std::vector<param_spec> more) {
  std::vector<param_spec> p = {
      {"pooling", param_kind::choice, pool, 0, 0, {"avg", "max", "none"},
       "window-score pooling", false},
      {"kernel", param_kind::integer, kernel, 1, 4095, {}, "pooling kernel (odd)", true}};
  for (auto& x : more) p.push_back(std::move(x));
  return p;
}
inline std::vector<param_spec> pooling(std::vector<param_spec> more = {}) {
  return pooling_with("max", "7", std::move(more));
}
inline std::vector<param_spec> official_avg5(std::vector<param_spec> more = {}) {
  return pooling_with("avg", "5", std::move(more));
}
inline param_spec integer(std::string key, std::string def, double lo, double hi,
                          std::string help) {
  return {std::move(key), param_kind::integer, std::move(def), lo, hi, {}, std::move(help), false};
}
inline param_spec real(std::string key, std::string def, double lo, double hi, std::string help) {
  return {std::move(key), param_kind::real, std::move(def), lo, hi, {}, std::move(help), false};
}
inline param_spec choice(std::string key, std::string def, std::vector<std::string> words,
                         std::string help) {
  return {std::move(key), param_kind::choice, std::move(def), 0, 0, std::move(words),
          std::move(help), false};
}
constexpr double unbounded = 9.0e15;  // integers up to 2^53 are exact in a double
}  // namespace params

namespace methods {

// Each entry: name, info() (paper, roles in words, parameters, profile needs), build().

struct full {
  static constexpr const char* name = "full";
  static method_info info() {
    method_info m{name, "-", "-", "-", "keep all", {}};
    m.evaluated_by_default = true;
    return m;
  }
  template <class C>
  static auto build(C&& c, const build_args&) {
    return c(all_heads{}, no_scores{}, keep_all{});
  }
};

struct random {
  static constexpr const char* name = "random";
  static method_info info() {
    return {name, "baseline", "all", "seeded random", "uniform",
            {params::integer("seed", "0", 0, params::unbounded, "random seed")}};
  }
  template <class C>
  static auto build(C&& c, const build_args& a) {
    random_scores r;
    r.seed = static_cast<std::uint64_t>(a.params.integer("seed"));
    return c(all_heads{}, r, uniform{});
  }
};

struct streaming {
  static constexpr const char* name = "streaming";
  static method_info info() {
    method_info m{name, "StreamingLLM, Xiao et al. 2023 (arXiv:2309.17453)", "all", "4 sinks + recent",
            "uniform", {params::integer("sinks", "4", 0, params::unbounded, "attention-sink tokens")}};
    m.evaluated_by_default = true;
    return m;
  }
  template <class C>
  static auto build(C&& c, const build_args& a) {
    kvtrim::streaming s;
    s.sinks = a.params.integer("sinks");
    s.validate();
    return c(all_heads{}, s, uniform{});
  }
};

struct snapkv {
  static constexpr const char* name = "snapkv";
  static method_info info() {
    method_info m{name, "SnapKV, Li et al. 2024 (arXiv:2404.14469)", "all",
            "window attention, max pool k=7, per KV head", "uniform", params::pooling()};
    m.evaluated_by_default = true;
    return m;
  }
  template <class C>
  static auto build(C&& c, const build_args& a) {
    return c(all_heads{}, a.window(), uniform{});
  }
};

struct pyramidkv {
  static constexpr const char* name = "pyramidkv";
  static method_info info() {
    method_info m{name, "PyramidKV, Cai et al. 2024 (arXiv:2406.02069)", "all", "as snapkv",
            "pyramid, β = 20",
            params::pooling({params::integer("beta", "20", 1, params::unbounded,
                                             "top layer's share: B_top = B / beta")})};
    m.evaluated_by_default = true;
    return m;
  }
  template <class C>
  static auto build(C&& c, const build_args& a) {
    return c(all_heads{}, a.window(), pyramid(a.params.integer("beta")));
  }
};

struct adakv {
  static constexpr const char* name = "adakv";
  static method_info info() {
    method_info m{name, "Ada-KV, Feng et al. 2024 (arXiv:2407.11550)", "all", "as snapkv",
            "head-adaptive within a layer, α = 0.2",
            params::pooling({params::real("alpha", "0.2", 0, 1, "floor: share split evenly")})};
    m.evaluated_by_default = true;
    return m;
  }
  template <class C>
  static auto build(C&& c, const build_args& a) {
    return c(all_heads{}, a.window(), head_adaptive<uniform>(a.params.real("alpha")));
  }
};

struct cake {
  static constexpr const char* name = "cake";
  static method_info info() {
    method_info m{name, "CAKE, Qin et al. 2025 (arXiv:2503.12491)", "all",
                  "mean + γ·variance, γ = 200", "layer preference, cascading, τ1 = τ2 = 1",
                  params::official_avg5({params::real("gamma", "200", 0, 1e30, "weight of the variance"),
                                   params::real("tau1", "1", 1e-9, 1e9, "entropy temperature"),
                                   params::real("tau2", "1", 1e-9, 1e9, "variance temperature")})};
    m.cascades = true;
    m.evaluated_by_default = true;
    return m;
  }
  template <class C>
  static auto build(C&& c, const build_args& a) {
    const window_attention w = a.window();
    cake_scores s;
    s.gamma = a.params.real("gamma");
    s.pool = w.pool;
    s.kernel = w.kernel;
    s.validate();
    return c(all_heads{}, s, cake_layers(a.params.real("tau1"), a.params.real("tau2")));
  }
};

struct headkv {
  static constexpr const char* name = "headkv";
  static method_info info() {
    method_info m{name, "HeadKV, Fu et al. 2024 (arXiv:2410.19258)", "all", "as snapkv",
                  "head pool from retrieval-reasoning scores, β = 1.01",
                  params::pooling({params::real("beta", "1.01", 1e-9, 1e9, "pool share exponent"),
                                   params::choice("total", "exact", {"exact", "formula"},
                                                  "exact L*H*B total, or the paper's formula")})};
    m.needs_retrieval_reasoning = true;
    m.evaluated_by_default = true;
    return m;
  }
  template <class C>
  static auto build(C&& c, const build_args& a) {
    const auto total = a.params.text("total") == "exact" ? head_pool::total::exact
                                                         : head_pool::total::formula;
    return c(all_heads{}, a.window(),
             head_pool(a.prof->retrieval_reasoning, a.params.real("beta"), total));
  }
};

inline param_spec srh_count() {
  return params::integer("heads", "4", 1, 1 << 20, "semantic retrieval heads per layer");
}
inline param_spec min_layer_tokens() {
  return params::integer("min_layer_tokens", "32", 0, params::unbounded,
                         "m: the error-aware allocator's least layer budget");
}

struct compresskv {
  static constexpr const char* name = "compresskv";
  static method_info info() {
    method_info m{name, "CompressKV, Lin et al. 2025 (arXiv:2508.02401)",
                  "top-4 semantic retrieval heads", "window attention, one shared set per layer",
                  "error-aware, m = 32", params::official_avg5({srh_count(), min_layer_tokens()})};
    m.needs_semantic_retrieval = m.needs_layer_error = true;
    m.evaluated_by_default = true;
    return m;
  }
  template <class C>
  static auto build(C&& c, const build_args& a) {
    return c(retrieval_heads(a.prof->semantic_retrieval, static_cast<int>(a.params.integer("heads"))),
             a.window(aggregation::shared),
             error_aware(a.prof->layer_error, a.params.integer("min_layer_tokens")));
  }
};

struct compresskv_uniform {  // ablation: semantic retrieval heads, uniform budgets
  static constexpr const char* name = "compresskv-uniform";
  static method_info info() {
    method_info m{name, "ablation", "as compresskv", "as compresskv", "uniform",
                  params::official_avg5({srh_count()})};
    m.needs_semantic_retrieval = true;
    return m;
  }
  template <class C>
  static auto build(C&& c, const build_args& a) {
    return c(retrieval_heads(a.prof->semantic_retrieval, static_cast<int>(a.params.integer("heads"))),
             a.window(aggregation::shared), uniform{});
  }
};

struct adakv_compresskv {  // Ada-KV's head split inside CompressKV's layer budgets
  static constexpr const char* name = "adakv-compresskv";
  static method_info info() {
    method_info m{name, "combination", "all", "as snapkv", "Ada-KV inside error-aware layer budgets",
                  params::pooling({params::real("alpha", "0.2", 0, 1, "floor: share split evenly"),
                                   min_layer_tokens()})};
    m.needs_layer_error = true;
    return m;
  }
  template <class C>
  static auto build(C&& c, const build_args& a) {
    return c(all_heads{}, a.window(),
             head_adaptive<error_aware>(
                 a.params.real("alpha"),
                 error_aware(a.prof->layer_error, a.params.integer("min_layer_tokens"))));
  }
};

struct knorm {
  static constexpr const char* name = "knorm";
  static method_info info() {
    return {name, "KnormPress, Devoto et al. 2024 (arXiv:2406.11430)", "all",
            "smallest key L2 norm, per KV head", "uniform", {}};
  }
  template <class C>
  static auto build(C&& c, const build_args&) {
    return c(all_heads{}, kvtrim::knorm{}, uniform{});
  }
};

struct tova {
  static constexpr const char* name = "tova";
  static method_info info() {
    return {name, "TOVA, Oren et al. 2024 (arXiv:2401.06104)", "all",
            "last token's attention, one shared set per layer", "uniform", {}};
  }
  template <class C>
  static auto build(C&& c, const build_args&) {
    return c(all_heads{}, kvtrim::tova{}, uniform{});
  }
};

struct keydiff {
  static constexpr const char* name = "keydiff";
  static method_info info() {
    return {name, "KeyDiff, Park et al. 2025 (arXiv:2504.15364)", "all",
            "key dissimilarity to the mean key, per KV head", "uniform", {}};
  }
  template <class C>
  static auto build(C&& c, const build_args&) {
    return c(all_heads{}, kvtrim::keydiff{}, uniform{});
  }
};

inline param_spec chunk_size() {
  return params::integer("chunk", "10", 1, 1 << 20, "tokens per chunk (kept or dropped whole)");
}

struct chunkkv {
  static constexpr const char* name = "chunkkv";
  static method_info info() {
    return {name, "ChunkKV, Liu et al. 2025 (arXiv:2502.00299)", "all",
            "as snapkv, summed per chunk of 10 tokens", "uniform", params::pooling({chunk_size()})};
  }
  template <class C>
  static auto build(C&& c, const build_args& a) {
    return c(all_heads{}, chunked<window_attention>{a.window(), a.params.integer("chunk")}, uniform{});
  }
};

struct compresskv_chunk {  // CompressKV's shared set, kept chunk by chunk
  static constexpr const char* name = "compresskv-chunk";
  static method_info info() {
    method_info m{name, "CompressKV + ChunkKV's chunks", "as compresskv",
                  "as compresskv, summed per chunk of 10 tokens", "error-aware, m = 32",
                  params::official_avg5({srh_count(), min_layer_tokens(), chunk_size()})};
    m.needs_semantic_retrieval = m.needs_layer_error = true;
    return m;
  }
  template <class C>
  static auto build(C&& c, const build_args& a) {
    return c(retrieval_heads(a.prof->semantic_retrieval, static_cast<int>(a.params.integer("heads"))),
             chunked<window_attention>{a.window(aggregation::shared), a.params.integer("chunk")},
             error_aware(a.prof->layer_error, a.params.integer("min_layer_tokens")));
  }
};

struct criticalkv {  // CriticalKV's two stages on SnapKV scores, Ada-KV budgets (CriticalAdaKVPress)
  static constexpr const char* name = "criticalkv";
  static method_info info() {
    method_info m{name, "CriticalKV, Feng et al. 2025 (arXiv:2502.03805)", "all",
                  "as snapkv, half the budget then × ‖v·W_o‖₁", "head-adaptive within a layer, α = 0.2",
                  params::pooling({params::real("alpha", "0.2", 0, 1, "floor: share split evenly"),
                                   params::real("epsilon", "1e-4", 0, 1e30,
                                                "added to the mean score before the value-norm weight"),
                                   params::real("first_stage", "0.5", 0, 1,
                                                "budget share chosen by the raw score")})};
    m.needs_out_proj = true;
    return m;
  }
  template <class C>
  static auto build(C&& c, const build_args& a) {
    critical<window_attention> s;
    s.base = a.window();
    s.epsilon = a.params.real("epsilon");
    s.first_stage = a.params.real("first_stage");
    s.validate();
    return c(all_heads{}, s, head_adaptive<uniform>(a.params.real("alpha")));
  }
};

struct h2o {  // observed attention of every prompt query (kvpress ObservedAttentionPress)
  static constexpr const char* name = "h2o";
  static method_info info() {
    method_info m{name, "H2O, Zhang et al. 2023 (arXiv:2306.14048)", "all",
                  "attention from every prompt query, per KV head", "uniform",
                  {params::choice("normalize", "count", {"count", "none"},
                                  "divide by the queries that see the key (kvpress), or H2O's raw sum")}};
    m.needs_attention_sums = true;
    return m;
  }
  template <class C>
  static auto build(C&& c, const build_args& a) {
    observed_attention s;
    s.norm = a.params.text("normalize") == "none" ? observed_attention::normalize::none
                                                  : observed_attention::normalize::count;
    return c(all_heads{}, s, uniform{});
  }
};

struct expected_attention {  // kvpress ExpectedAttentionPress, statistics of the prompt's queries
  static constexpr const char* name = "expected_attention";
  static method_info info() {
    method_info m{name, "Expected Attention, Devoto et al. 2025 (arXiv:2510.00636)", "all",
                  "expected attention of the next 512 queries × ‖v‖₂, per KV head", "uniform",
                  {params::integer("n_future", "512", 1, 1 << 20, "future positions RoPE is averaged over"),
                   params::integer("n_sink", "4", 0, 1 << 20, "first tokens always kept, left out of the statistics"),
                   {"covariance", param_kind::boolean, "true", 0, 1, {}, "use the queries' covariance", false},
                   {"vnorm", param_kind::boolean, "true", 0, 1, {}, "weight by the value's L2 norm", false},
                   params::real("epsilon", "0", 0, 1e30, "added to the mean score before the value norm")}};
    m.needs_prompt_queries = true;
    return m;
  }
  template <class C>
  static auto build(C&& c, const build_args& a) {
    kvtrim::expected_attention s;
    s.n_future = a.params.integer("n_future");
    s.n_sink = a.params.integer("n_sink");
    s.use_covariance = a.params.boolean("covariance");
    s.use_vnorm = a.params.boolean("vnorm");
    s.epsilon = a.params.real("epsilon");
    s.validate();
    return c(all_heads{}, s, uniform{});
  }
};

// Reproductions of a defect, never defaults (score/misgrouped.hpp): the SnapKV and PyramidKV
// baselines as CompressKV's release ran them, KV head j scored by query heads j, j + KV, ...
// instead of its own GQA group; pooling avg 5, that release's evaluation default.
struct snapkv_paper {
  static constexpr const char* name = "snapkv-paper";
  static method_info info() {
    return {name, "defect reproduction: CompressKV release's SnapKV baseline", "all",
            "as snapkv, GQA groups mixed up (KV head j scored by query heads h mod KV = j)", "uniform",
            params::official_avg5()};
  }
  template <class C>
  static auto build(C&& c, const build_args& a) {
    const window_attention w = a.window();
    return c(all_heads{}, misgrouped_window_attention{w.pool, w.kernel}, uniform{});
  }
};

struct pyramidkv_paper {
  static constexpr const char* name = "pyramidkv-paper";
  static method_info info() {
    return {name, "defect reproduction: CompressKV release's PyramidKV baseline", "all", "as snapkv-paper",
            "pyramid, β = 20",
            params::official_avg5({params::integer("beta", "20", 1, params::unbounded,
                                                   "top layer's share: B_top = B / beta")})};
  }
  template <class C>
  static auto build(C&& c, const build_args& a) {
    const window_attention w = a.window();
    return c(all_heads{}, misgrouped_window_attention{w.pool, w.kernel}, pyramid(a.params.integer("beta")));
  }
};
}  // namespace methods

// Every registered method, in the order the docs list them.
using all_methods = std::tuple<methods::full, methods::random, methods::streaming, methods::snapkv,
                               methods::pyramidkv, methods::adakv, methods::cake, methods::headkv,
                               methods::compresskv, methods::compresskv_uniform,
                               methods::adakv_compresskv, methods::knorm, methods::tova,
                               methods::keydiff, methods::chunkkv, methods::compresskv_chunk,
                               methods::criticalkv, methods::h2o, methods::expected_attention,
                               methods::snapkv_paper, methods::pyramidkv_paper>;

// Calls f(entry) for each registered method type, in registry order.
template <class F>
void for_each_method(F&& f) {
  std::apply([&f](auto... m) { (f(m), ...); }, all_methods{});
}

inline const std::vector<method_info>& method_registry() {
  static const std::vector<method_info> all = [] {
    std::vector<method_info> v;
    for_each_method([&v](auto m) { v.push_back(decltype(m)::info()); });
    return v;
  }();
  return all;
}

inline std::vector<std::string> method_names() {
  std::vector<std::string> out;
  for (const auto& m : method_registry()) out.push_back(m.name);
  return out;
}

// Throws kvtrim::error naming every accepted method.
inline const method_info& find_method(const std::string& name) {
  for (const auto& m : method_registry())
    if (m.name == name) return m;
  std::string all;
  for (const auto& m : method_registry()) all += (all.empty() ? "" : ", ") + m.name;
  detail::fail("unknown method '", name, "' (accepted: ", all, ")");
}

}  // namespace kvtrim
