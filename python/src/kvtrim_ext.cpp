// The Python binding of kvtrim (module kvtrim._kvtrim). A thin layer: every array is viewed where
// it lies (NumPy buffer or DLPack tensor, any strides, f32 / f16 / bf16), every method, parameter
// and check is the C++ library's own. kvtrim::error becomes kvtrim.Error (a ValueError); a wrong
// dtype is a TypeError, a wrong device, rank or shape a ValueError.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/unique_ptr.h>
#include <nanobind/stl/variant.h>
#include <nanobind/stl/vector.h>

#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <variant>
#include <vector>

#include "kvtrim/kvtrim.hpp"
#include "kvtrim/attention/ragged_decode.hpp"
#include "kvtrim/calibrate/layer_eviction_error.hpp"
#include "kvtrim/calibrate/retrieval_reasoning_score.hpp"
#include "kvtrim/calibrate/semantic_retrieval_score.hpp"
#include "kvtrim/profile/import.hpp"

namespace nb = nanobind;
using namespace nb::literals;
using kvtrim::index_t;

namespace {

// ---- arrays ---------------------------------------------------------------------------------

using any_array = nb::ndarray<>;         // writable, any dtype / strides / device
using ro_array = nb::ndarray<nb::ro>;    // read-only accepted

enum class elem { f32, f16, bf16 };

const char* elem_name(elem e) { return e == elem::f32 ? "float32" : e == elem::f16 ? "float16" : "bfloat16"; }

std::string dtype_text(nb::dlpack::dtype d) {
  std::ostringstream os;
  switch (static_cast<nb::dlpack::dtype_code>(d.code)) {
    case nb::dlpack::dtype_code::Int: os << "int"; break;
    case nb::dlpack::dtype_code::UInt: os << "uint"; break;
    case nb::dlpack::dtype_code::Float: os << "float"; break;
    case nb::dlpack::dtype_code::Bfloat: os << "bfloat"; break;
    case nb::dlpack::dtype_code::Complex: os << "complex"; break;
    case nb::dlpack::dtype_code::Bool: os << "bool"; break;
    default: os << "code" << int(d.code) << "_"; break;
  }
  os << int(d.bits);
  return os.str();
}

template <class A>
void check_cpu(const A& a, const char* name) {
  if (a.device_type() != nb::device::cpu::value) {
    std::ostringstream os;
    os << "kvtrim: " << name << " is on device type " << a.device_type() << " (DLPack code), id "
       << a.device_id() << "; the CPU backend needs CPU memory (move it with .cpu())";
    throw nb::value_error(os.str().c_str());
  }
}

template <class A>
elem elem_of(const A& a, const char* name) {
  const nb::dlpack::dtype d = a.dtype();
  if (d.lanes == 1) {
    if (d == nb::dtype<float>()) return elem::f32;
    if (d.code == uint8_t(nb::dlpack::dtype_code::Float) && d.bits == 16) return elem::f16;
    if (d.code == uint8_t(nb::dlpack::dtype_code::Bfloat) && d.bits == 16) return elem::bf16;
  }
  throw nb::type_error(("kvtrim: " + std::string(name) + " has dtype " + dtype_text(d) +
                        "; accepted: float32, float16, bfloat16")
                           .c_str());
}

template <class A>
void check_rank(const A& a, size_t ndim, const char* name, const char* layout) {
  if (a.ndim() != ndim) {
    std::ostringstream os;
    os << "kvtrim: " << name << " has " << a.ndim() << " dimensions, expected " << ndim << " ("
       << layout << ")";
    throw nb::value_error(os.str().c_str());
  }
}

template <class T, class A>
kvtrim::view3<T> view_of(const A& a, const char* name, const char* layout) {
  check_rank(a, 3, name, layout);
  // Strides come in elements; a zero-size array may report anything, check_view rejects it.
  return kvtrim::view3<T>(static_cast<T*>(const_cast<void*>(static_cast<const void*>(a.data()))),
                          static_cast<index_t>(a.shape(0)), static_cast<index_t>(a.shape(1)),
                          static_cast<index_t>(a.shape(2)), static_cast<index_t>(a.stride(0)),
                          static_cast<index_t>(a.stride(1)), static_cast<index_t>(a.stride(2)));
}

// One layer's K, V, window queries as Python handed them.
struct layer_arrays {
  any_array keys, values;
  ro_array queries;
  index_t length = 0, kv_head_offset = 0;
};

elem check_layer_arrays(const layer_arrays& a) {
  check_cpu(a.keys, "keys");
  check_cpu(a.values, "values");
  check_cpu(a.queries, "queries");
  const elem e = elem_of(a.keys, "keys");
  if (elem_of(a.values, "values") != e || elem_of(a.queries, "queries") != e)
    throw nb::type_error(("kvtrim: keys, values and queries must share one dtype (keys are " +
                          std::string(elem_name(e)) + ", values " +
                          elem_name(elem_of(a.values, "values")) + ", queries " +
                          elem_name(elem_of(a.queries, "queries")) + ")")
                             .c_str());
  return e;
}

template <class T>
kvtrim::layer_kv<T> layer_of(const layer_arrays& a) {
  kvtrim::layer_kv<T> kv;
  kv.keys = view_of<T>(a.keys, "keys", "[kv_head, token, dim]");
  kv.values = view_of<T>(a.values, "values", "[kv_head, token, dim]");
  kv.queries = view_of<const T>(a.queries, "queries", "[q_head, window, dim]");
  kv.length = a.length;
  kv.kv_head_offset = a.kv_head_offset;
  if (a.length < 0) throw nb::value_error("kvtrim: length must be >= 0 (0 = all tokens of the views)");
  return kv;
}

// Calls f(layer_kv<T>) with T the arrays' element type.
template <class F>
auto with_layer(const layer_arrays& a, F&& f) {
  switch (check_layer_arrays(a)) {
    case elem::f32: return f(layer_of<float>(a));
    case elem::f16: return f(layer_of<kvtrim::half>(a));
    default: return f(layer_of<kvtrim::bfloat16>(a));
  }
}

nb::ndarray<nb::numpy, int64_t, nb::ndim<1>> to_numpy(std::vector<index_t> v) {
  auto* heap = new std::vector<index_t>(std::move(v));
  nb::capsule owner(heap, [](void* p) noexcept { delete static_cast<std::vector<index_t>*>(p); });
  return nb::ndarray<nb::numpy, int64_t, nb::ndim<1>>(heap->data(), {heap->size()}, owner);
}

nb::ndarray<nb::numpy, int64_t, nb::ndim<2>> to_numpy2(const std::vector<std::vector<index_t>>& m) {
  const size_t rows = m.size(), cols = rows ? m[0].size() : 0;
  auto* heap = new std::vector<index_t>();
  heap->reserve(rows * cols);
  for (const auto& r : m) heap->insert(heap->end(), r.begin(), r.end());
  nb::capsule owner(heap, [](void* p) noexcept { delete static_cast<std::vector<index_t>*>(p); });
  return nb::ndarray<nb::numpy, int64_t, nb::ndim<2>>(heap->data(), {rows, cols}, owner);
}

// A float32 [rows][cols] array, C-contiguous, read as pointer + row stride.
struct f32_rows {
  const float* data;
  index_t rows, cols, stride;
};
f32_rows rows_of(const ro_array& a, const char* name) {
  check_cpu(a, name);
  if (!(a.dtype() == nb::dtype<float>()))
    throw nb::type_error(("kvtrim: " + std::string(name) + " has dtype " + dtype_text(a.dtype()) +
                          "; accepted: float32")
                             .c_str());
  check_rank(a, 2, name, "[q_head, key]");
  if (a.shape(1) > 1 && a.stride(1) != 1)
    throw nb::value_error(("kvtrim: " + std::string(name) + " rows must be contiguous (stride 1 along keys)").c_str());
  return {static_cast<const float*>(a.data()), static_cast<index_t>(a.shape(0)),
          static_cast<index_t>(a.shape(1)), static_cast<index_t>(a.stride(0))};
}

// ---- methods --------------------------------------------------------------------------------

using param_value = std::variant<bool, std::int64_t, double, std::string>;

std::string param_text(const param_value& v) {
  if (const bool* b = std::get_if<bool>(&v)) return *b ? "true" : "false";
  if (const auto* i = std::get_if<std::int64_t>(&v)) return std::to_string(*i);
  if (const double* d = std::get_if<double>(&v)) {
    std::ostringstream os;
    os.precision(17);
    os << *d;
    return os.str();
  }
  return std::get<std::string>(v);
}

kvtrim::budget budget_of(const std::variant<std::int64_t, double>& b) {
  if (const auto* i = std::get_if<std::int64_t>(&b)) return kvtrim::budget::tokens(*i);
  return kvtrim::budget::ratio(std::get<double>(b));
}

struct py_method;

// One sequence's compression state. Keeps its method (and so the profile) alive.
struct py_sequence {
  std::shared_ptr<const py_method> owner;
  std::unique_ptr<kvtrim::sequence_compressor> seq;
  bool cascades = false;
};

struct py_method {
  kvtrim::method m;
  std::shared_ptr<const kvtrim::profile> prof;  // what m points into
  std::map<std::string, std::string> params;
  bool cascades = false;
  index_t window = 8;
};

// PROTOTYPE against method_config: replaced by the registry's method_spec at the merge.
bool cascades_of(const std::string& name) { return name == "cake"; }

double number_param(const std::string& key, const std::string& text) {
  try {
    size_t used = 0;
    const double d = std::stod(text, &used);
    if (used == text.size()) return d;
  } catch (const std::exception&) {
  }
  kvtrim::detail::fail("parameter ", key, " = '", text, "' is not a number");
}

kvtrim::method make(const std::string& name, const kvtrim::model_shape& shape, kvtrim::budget b,
                    index_t window, const kvtrim::profile* prof,
                    const std::map<std::string, std::string>& params) {
  kvtrim::method_config cfg;
  cfg.name = name;
  cfg.target = b;
  cfg.window = window;
  cfg.prof = prof;
  for (const auto& [k, v] : params) {
    const double d = (k == "pooling" || k == "headkv_exact") ? 0.0 : number_param(k, v);
    if (k == "pooling") {
      kvtrim::detail::require(v == "avg" || v == "max" || v == "none", "pooling '", v, "' (accepted: avg, max, none)");
      cfg.pool = v == "avg" ? kvtrim::pooling::avg : v == "max" ? kvtrim::pooling::max : kvtrim::pooling::none;
    } else if (k == "kernel") cfg.kernel = static_cast<int>(d);
    else if (k == "retrieval_heads") cfg.retrieval_heads = static_cast<int>(d);
    else if (k == "min_layer_tokens" || k == "m") cfg.min_layer_tokens = static_cast<index_t>(d);
    else if (k == "beta") (name == "headkv" ? cfg.headkv_beta : cfg.pyramid_beta) = d;
    else if (k == "alpha") cfg.adakv_alpha = d;
    else if (k == "sinks") cfg.sinks = static_cast<index_t>(d);
    else if (k == "seed") cfg.seed = static_cast<std::uint64_t>(d);
    else if (k == "gamma") cfg.cake_gamma = d;
    else if (k == "tau1") cfg.cake_tau1 = d;
    else if (k == "tau2") cfg.cake_tau2 = d;
    else kvtrim::detail::fail("method '", name, "' has no parameter '", k, "'");
  }
  return kvtrim::make_method(cfg, shape);
}

// compress_layer, then (cascading methods) re-trim earlier layers through the Python store.
std::vector<index_t> compress_with_store(py_sequence& s, int layer, const layer_arrays& a,
                                         nb::object store) {
  if (s.cascades && store.is_none())
    kvtrim::detail::fail("method '", s.owner->m.name(),
                         "' re-trims earlier layers: pass store= (an object with compacted(layer, kv_head) "
                         "and resized(layer, lengths))");
  std::vector<index_t> out;
  {
    nb::gil_scoped_release nogil;
    out = with_layer(a, [&](const auto& kv) { return s.seq->compress_layer(layer, kv); });
  }
  if (!s.cascades) return out;
  for (int l : s.seq->pending_retrims()) {
    const index_t H = s.owner->m.shape().kv_heads;
    std::vector<index_t> lengths;
    for (index_t h = 0; h < H; ++h) {
      nb::object kvs = store.attr("compacted")(l, h);
      auto t = nb::cast<std::pair<any_array, any_array>>(kvs);
      layer_arrays la{t.first, t.second, a.queries, 0, h};
      const std::vector<index_t> one = with_layer(la, [&](auto kv) {
        kv.length = 0;
        return s.seq->retrim(l, kv);
      });
      lengths.insert(lengths.end(), one.begin(), one.end());
    }
    store.attr("resized")(l, to_numpy(lengths));
  }
  return out;
}

}  // namespace

NB_MODULE(_kvtrim, m) {
  m.doc() = "kvtrim: KV-cache compression at the end of prefill (C++ core of the kvtrim package)";
  nb::exception<kvtrim::error>(m, "Error", PyExc_ValueError);
  // Objects still referenced from PyTorch / transformers globals at interpreter exit are not leaks
  // of this module; nanobind's exit-time report would only be noise there.
  nb::set_leak_warnings(false);

  // ---- shape, budgets -----------------------------------------------------------------------
  nb::class_<kvtrim::model_shape>(m, "ModelShape",
                                  "Layer and head counts of a model (GQA group = q_heads / kv_heads).")
      .def("__init__",
           [](kvtrim::model_shape* s, int layers, int q_heads, int kv_heads, int head_dim, index_t context) {
             new (s) kvtrim::model_shape{layers, q_heads, kv_heads, head_dim, context};
             s->validate();
           },
           "layers"_a, "q_heads"_a, "kv_heads"_a, "head_dim"_a, "context"_a = 0,
           "Validated: layers, kv_heads, head_dim > 0 and q_heads a multiple of kv_heads; context 0 = unlimited.")
      .def_ro("layers", &kvtrim::model_shape::layers)
      .def_ro("q_heads", &kvtrim::model_shape::q_heads)
      .def_ro("kv_heads", &kvtrim::model_shape::kv_heads)
      .def_ro("head_dim", &kvtrim::model_shape::head_dim)
      .def_ro("context", &kvtrim::model_shape::context)
      .def_prop_ro("group", &kvtrim::model_shape::group, "Query heads per KV head.")
      .def("__eq__", [](const kvtrim::model_shape& a, const kvtrim::model_shape& b) { return a == b; })
      .def("__repr__", [](const kvtrim::model_shape& s) {
        std::ostringstream os;
        os << "ModelShape(layers=" << s.layers << ", q_heads=" << s.q_heads << ", kv_heads=" << s.kv_heads
           << ", head_dim=" << s.head_dim << ", context=" << s.context << ")";
        return os.str();
      });

  m.def("kv_bytes", &kvtrim::kv_bytes, "tokens_summed_over_heads"_a, "head_dim"_a, "bytes_per_value"_a,
        "Bytes of K and V for this many (token, layer, KV head) rows.");

  // ---- scores and selections ----------------------------------------------------------------
  nb::class_<kvtrim::token_scores>(m, "TokenScores",
                                   "One score per (row, candidate token); a row is a KV head, or one "
                                   "shared set for the layer. Scores are sums over contributing query "
                                   "heads, so shards add up with accumulate().")
      .def_ro("shared", &kvtrim::token_scores::shared)
      .def_ro("kv_heads", &kvtrim::token_scores::kv_heads)
      .def_ro("kv_head_offset", &kvtrim::token_scores::kv_head_offset)
      .def_ro("candidates", &kvtrim::token_scores::candidates)
      .def_ro("window", &kvtrim::token_scores::window)
      .def_rw("entropy_sum", &kvtrim::token_scores::entropy_sum)
      .def_rw("variance_sum", &kvtrim::token_scores::variance_sum)
      .def_rw("stat_heads", &kvtrim::token_scores::stat_heads)
      .def_prop_ro("rows", &kvtrim::token_scores::rows)
      .def_prop_ro(
          "values",
          [](kvtrim::token_scores& s) {
            return nb::ndarray<nb::numpy, float, nb::ndim<2>>(
                s.values.data(), {static_cast<size_t>(s.rows()), static_cast<size_t>(s.candidates)},
                nb::find(&s));
          },
          nb::rv_policy::reference_internal,
          "float32 [rows, candidates], a writable view of the scores (no copy).")
      .def("accumulate", &kvtrim::token_scores::accumulate, "other"_a,
           "Adds another shard's partial scores of the same rows (a tensor-parallel all-reduce).");

  nb::class_<kvtrim::selection>(m, "Selection", "What each KV head keeps: ascending token indices, window included.")
      .def("__init__",
           [](kvtrim::selection* s, std::vector<std::vector<index_t>> keep) {
             new (s) kvtrim::selection{std::move(keep)};
           },
           "keep"_a)
      .def_prop_ro("keep",
                   [](const kvtrim::selection& s) {
                     nb::list out;
                     for (const auto& k : s.keep) out.append(to_numpy(k));
                     return out;
                   },
                   "Per KV head, an int64 array of kept token indices (a copy).")
      .def("lengths", [](const kvtrim::selection& s) { return to_numpy(s.lengths()); })
      .def("total", &kvtrim::selection::total);

  // ---- profiles ------------------------------------------------------------------------------
  nb::class_<kvtrim::profile>(m, "Profile",
                              "A model's offline artefacts: semantic-retrieval and retrieval-reasoning "
                              "head scores [layer][q_head], layer eviction-error weights [layer], provenance.")
      .def(nb::init<>())
      .def_rw("model", &kvtrim::profile::model)
      .def_rw("model_sha256", &kvtrim::profile::model_sha256)
      .def_rw("layers", &kvtrim::profile::layers)
      .def_rw("q_heads", &kvtrim::profile::q_heads)
      .def_rw("kv_heads", &kvtrim::profile::kv_heads)
      .def_rw("semantic_retrieval", &kvtrim::profile::semantic_retrieval)
      .def_rw("retrieval_reasoning", &kvtrim::profile::retrieval_reasoning)
      .def_rw("layer_error", &kvtrim::profile::layer_error)
      .def_rw("provenance", &kvtrim::profile::provenance)
      .def("has_semantic_retrieval", &kvtrim::profile::has_semantic_retrieval)
      .def("has_retrieval_reasoning", &kvtrim::profile::has_retrieval_reasoning)
      .def("has_layer_error", &kvtrim::profile::has_layer_error)
      .def("validate", &kvtrim::profile::validate, "Raises kvtrim.Error naming the bad field.")
      .def("check_matches", &kvtrim::profile::check_matches, "shape"_a,
           "Raises kvtrim.Error if the profile was made for another model (layer or head counts).")
      .def("to_json", [](const kvtrim::profile& p) { return kvtrim::json::dump(kvtrim::to_json(p), 2); },
           "The profile as JSON text (validated first).")
      .def_static("from_json",
                  [](const std::string& text, const std::string& source) {
                    return kvtrim::profile_from_json(kvtrim::json::parse(text, source), source);
                  },
                  "text"_a, "source"_a = "profile")
      .def("__repr__", [](const kvtrim::profile& p) {
        std::ostringstream os;
        os << "Profile(model='" << p.model << "', layers=" << p.layers << ", q_heads=" << p.q_heads
           << ", kv_heads=" << p.kv_heads << ", semantic_retrieval=" << p.has_semantic_retrieval()
           << ", retrieval_reasoning=" << p.has_retrieval_reasoning() << ", layer_error=" << p.has_layer_error()
           << ")";
        return os.str();
      });
  m.def("load_profile", &kvtrim::load_profile, "path"_a, "Reads and validates a kvtrim profile JSON file.");
  m.def("save_profile", &kvtrim::save_profile, "profile"_a, "path"_a,
        "Validates, then writes the whole file or nothing.");
  m.def(
      "import_profile",
      [](int layers, int q_heads, int kv_heads, const std::string& compresskv_head_idx,
         const std::string& compresskv_layer_score, const std::string& headkv_scores, const std::string& model) {
        kvtrim::import_sources src;
        src.compresskv_head_idx = compresskv_head_idx;
        src.compresskv_layer_score = compresskv_layer_score;
        src.headkv_scores = headkv_scores;
        return kvtrim::import_profile(src, layers, q_heads, kv_heads, model);
      },
      "layers"_a, "q_heads"_a, "kv_heads"_a, nb::kw_only(), "compresskv_head_idx"_a = "",
      "compresskv_layer_score"_a = "", "headkv_scores"_a = "", "model"_a = "",
      "A profile from the published artefacts: CompressKV <model>_head_idx.json (semantic "
      "retrieval), <model>_layer_score.jsonl (layer error), HeadKV "
      "<model>_retrieval_reasoning_heads.json (retrieval reasoning). Every id and size is checked.");
  m.def("layer_weights", &kvtrim::layer_weights, "rows"_a,
        "CompressKV's layer weights from per-dataset error totals (each row L1-normalised, averaged).");

  // ---- the method registry -------------------------------------------------------------------
  // PROTOTYPE: names only until the registry lands.
  struct proto_info {
    std::string name, paper;
    std::vector<int> params;
  };
  nb::class_<proto_info>(m, "MethodInfo", "One registry entry.")
      .def_ro("name", &proto_info::name)
      .def_ro("paper", &proto_info::paper)
      .def_ro("params", &proto_info::params);
  m.def("method_names", &kvtrim::method_names, "Every method name, in the registry's order.");
  m.def("methods", [] {
    std::vector<proto_info> v;
    for (const auto& n : kvtrim::method_names()) v.push_back({n, "", {}});
    return v;
  });
  m.def("method_info", [](const std::string& n) {
    for (const auto& x : kvtrim::method_names())
      if (x == n) return proto_info{n, "", {}};
    kvtrim::detail::fail("unknown method '", n, "' (accepted: ...)");
  }, "name"_a);
  nb::class_<py_method>(m, "Method",
                        "A configured method for one model shape: immutable, shareable. Build with "
                        "Method(name, shape, budget=64, window=8, profile=None, **params); see methods().")
      .def(
          "__init__",
          [](py_method* self, const std::string& name, const kvtrim::model_shape& shape,
             std::variant<std::int64_t, double> budget, index_t window,
             std::optional<kvtrim::profile> prof, std::map<std::string, param_value> params) {
            auto p = prof ? std::make_shared<const kvtrim::profile>(std::move(*prof)) : nullptr;
            std::map<std::string, std::string> text;
            for (const auto& [k, v] : params) text[k] = param_text(v);
            new (self) py_method{make(name, shape, budget_of(budget), window, p.get(), text), p, text, false, window};
            self->cascades = cascades_of(name);
          },
          "name"_a, "shape"_a, "budget"_a = 64, "window"_a = 8, "profile"_a = nb::none(),
          "params"_a = std::map<std::string, param_value>{},
          "budget: an int is B, the average tokens kept per KV head per layer (window included);\n"
          "a float in (0, 1] is a ratio of the prompt. params: the method's own parameters by key\n"
          "(method_info(name).params). Raises kvtrim.Error for an unknown name, a bad parameter or a\n"
          "profile missing or made for another model.")
      .def_prop_ro("name", [](const py_method& x) { return x.m.name(); })
      .def_prop_ro("shape", [](const py_method& x) { return x.m.shape(); })
      .def_prop_ro("params", [](const py_method& x) { return x.params; }, "The parameters given, as text.")
      .def_prop_ro("cascades", [](const py_method& x) { return x.cascades; },
                   "Whether compress_layer re-trims earlier layers (needs store=).")
      .def_prop_ro("window", [](const py_method& x) { return x.window; }, "Observation window w.")
      .def(
          "planned_budgets",
          [](const py_method& x, index_t n) { return to_numpy2(x.m.planned_budgets(n)); }, "prompt_length"_a,
          "int64 [layer, kv_head] tokens each head keeps for a prompt of this length, as planned before\n"
          "any data is seen (Ada-KV and CAKE depend on the data; this is their neutral shape).")
      .def(
          "begin",
          [](const std::shared_ptr<py_method>& x, index_t n) {
            auto s = std::make_unique<py_sequence>();
            s->owner = x;
            s->seq = x->m.begin(n);
            s->cascades = x->cascades;
            return s;
          },
          "prompt_length"_a, "One sequence's state; holds no global state.");

  // ---- sequences -----------------------------------------------------------------------------
  nb::class_<py_sequence>(m, "Sequence",
                          "One sequence's compression state (from Method.begin). Call per layer at the end "
                          "of prefill; arrays are [kv_head, token, dim] keys/values (any strides, modified "
                          "in place) and [q_head, window, dim] queries of the last `window` prompt positions.")
      .def_prop_ro("prompt_length", [](const py_sequence& s) { return s.seq->prompt_length(); })
      .def_prop_ro("budget_tokens", [](const py_sequence& s) { return s.seq->budget_tokens(); },
                   "B resolved for this prompt.")
      .def(
          "score",
          [](const py_sequence& s, int layer, any_array k, any_array v, ro_array q, index_t length,
             index_t kv_head_offset) {
            layer_arrays a{k, v, q, length, kv_head_offset};
            nb::gil_scoped_release nogil;
            return with_layer(a, [&](const auto& kv) { return s.seq->score(layer, kv); });
          },
          "layer"_a, "keys"_a, "values"_a, "queries"_a, nb::kw_only(), "length"_a = 0,
          "kv_head_offset"_a = 0, "Token scores of one layer (reads queries and keys; writes nothing).")
      .def(
          "select", [](py_sequence& s, int layer, const kvtrim::token_scores& sc) { return s.seq->select(layer, sc); },
          "layer"_a, "scores"_a, "Per-head budgets and top-k: what each KV head keeps.")
      .def(
          "evict",
          [](const py_sequence& s, const kvtrim::selection& sel, any_array k, any_array v, ro_array q,
             index_t length, index_t kv_head_offset) {
            layer_arrays a{k, v, q, length, kv_head_offset};
            std::vector<index_t> out;
            {
              nb::gil_scoped_release nogil;
              out = with_layer(a, [&](const auto& kv) { return s.seq->evict(sel, kv); });
            }
            return to_numpy(std::move(out));
          },
          "selection"_a, "keys"_a, "values"_a, "queries"_a, nb::kw_only(), "length"_a = 0,
          "kv_head_offset"_a = 0,
          "Moves each head's kept rows to the front of its rows, in place; returns the new lengths.")
      .def(
          "compress_layer",
          [](py_sequence& s, int layer, any_array k, any_array v, ro_array q, index_t length,
             index_t kv_head_offset, nb::object store) {
            layer_arrays a{k, v, q, length, kv_head_offset};
            return to_numpy(compress_with_store(s, layer, a, store));
          },
          "layer"_a, "keys"_a, "values"_a, "queries"_a, nb::kw_only(), "length"_a = 0,
          "kv_head_offset"_a = 0, "store"_a = nb::none(),
          "score -> select -> evict for one layer, in place: rows [0, lengths[h]) of head h of keys/values\n"
          "are the kept tokens in prompt order afterwards. Returns int64 lengths per KV head.\n"
          "Cascading methods (Method.info.cascades, CAKE) need `store`: an object with\n"
          "  store.compacted(layer, kv_head) -> (keys, values) of an earlier layer's compacted rows\n"
          "  store.resized(layer, lengths)    called when that layer was re-trimmed\n"
          "without it they raise kvtrim.Error.");

  // ---- ragged decode attention ---------------------------------------------------------------
  m.def(
      "ragged_decode_attention",
      [](ro_array q, ro_array keys, ro_array values, ro_array offsets, ro_array lengths, float scale,
         any_array out) {
        check_cpu(q, "q");
        check_cpu(keys, "keys");
        check_cpu(values, "values");
        check_cpu(out, "out");
        check_cpu(offsets, "offsets");
        check_cpu(lengths, "lengths");
        if (!(q.dtype() == nb::dtype<float>()) || !(out.dtype() == nb::dtype<float>()))
          throw nb::type_error("kvtrim: ragged_decode_attention: q and out must be float32");
        if (!(offsets.dtype() == nb::dtype<int64_t>()) || !(lengths.dtype() == nb::dtype<int64_t>()))
          throw nb::type_error("kvtrim: ragged_decode_attention: offsets and lengths must be int64");
        check_rank(q, 3, "q", "[batch, q_head, dim]");
        check_rank(out, 3, "out", "[batch, q_head, dim]");
        check_rank(keys, 2, "keys", "[row, dim]");
        check_rank(values, 2, "values", "[row, dim]");
        check_rank(offsets, 2, "offsets", "[batch, kv_head]");
        check_rank(lengths, 2, "lengths", "[batch, kv_head]");
        const elem e = elem_of(keys, "keys");
        if (elem_of(values, "values") != e) throw nb::type_error("kvtrim: keys and values dtypes differ");
        const size_t B = q.shape(0), Hq = q.shape(1), d = q.shape(2), H = offsets.shape(1);
        auto contiguous3 = [](const auto& a) {
          return a.stride(2) == 1 && a.stride(1) == static_cast<int64_t>(a.shape(2)) &&
                 a.stride(0) == static_cast<int64_t>(a.shape(1) * a.shape(2));
        };
        if (!contiguous3(q) || !contiguous3(out))
          throw nb::value_error("kvtrim: ragged_decode_attention: q and out must be C-contiguous");
        if (out.shape(0) != B || out.shape(1) != Hq || out.shape(2) != d)
          throw nb::value_error("kvtrim: ragged_decode_attention: out shape differs from q shape");
        if (keys.shape(1) != d || values.shape(1) != d || keys.shape(0) != values.shape(0))
          throw nb::value_error("kvtrim: ragged_decode_attention: keys/values must be [rows, dim] of q's dim");
        if (keys.stride(1) != 1 || values.stride(1) != 1 || keys.stride(0) != values.stride(0))
          throw nb::value_error("kvtrim: ragged_decode_attention: keys/values rows must be contiguous with one row stride");
        if (offsets.shape(0) != B || lengths.shape(0) != B || lengths.shape(1) != H || H == 0 || Hq % H != 0)
          throw nb::value_error("kvtrim: ragged_decode_attention: offsets/lengths must be [batch, kv_head] with q_heads a multiple of kv_heads");
        const index_t rows = static_cast<index_t>(keys.shape(0));
        const auto* off = static_cast<const int64_t*>(offsets.data());
        const auto* len = static_cast<const int64_t*>(lengths.data());
        const int64_t os0 = offsets.stride(0), os1 = offsets.stride(1), ls0 = lengths.stride(0), ls1 = lengths.stride(1);
        for (size_t b = 0; b < B; ++b)
          for (size_t h = 0; h < H; ++h) {
            const int64_t o = off[b * os0 + h * os1], n = len[b * ls0 + h * ls1];
            if (o < 0 || n < 0 || o + n > rows)
              throw nb::value_error("kvtrim: ragged_decode_attention: a head's rows [offset, offset + length) fall outside keys");
          }
        auto run = [&](auto tag) {
          using T = decltype(tag);
          const T* K = static_cast<const T*>(keys.data());
          const T* V = static_cast<const T*>(values.data());
          const index_t rs = static_cast<index_t>(keys.stride(0));
          nb::gil_scoped_release nogil;
          kvtrim::ragged_kv<T> r;
          r.row_stride = rs;
          r.head_dim = static_cast<index_t>(d);
          for (size_t b = 0; b < B; ++b) {
            r.keys.clear();
            r.values.clear();
            r.lengths.clear();
            for (size_t h = 0; h < H; ++h) {
              const int64_t o = off[b * os0 + h * os1];
              r.keys.push_back(K + o * rs);
              r.values.push_back(V + o * rs);
              r.lengths.push_back(len[b * ls0 + h * ls1]);
            }
            kvtrim::ragged_decode_attention(static_cast<const float*>(q.data()) + b * Hq * d, r,
                                            static_cast<int>(Hq / H), scale,
                                            static_cast<float*>(out.data()) + b * Hq * d);
          }
        };
        switch (e) {
          case elem::f32: run(float{}); break;
          case elem::f16: run(kvtrim::half{}); break;
          default: run(kvtrim::bfloat16{}); break;
        }
      },
      "q"_a, "keys"_a, "values"_a, "offsets"_a, "lengths"_a, "scale"_a, "out"_a,
      "Decode attention of one new token per sequence over per-KV-head lengths.\n"
      "q, out: float32 [batch, q_head, dim] (C-contiguous; out may be q). keys, values: [rows, dim]\n"
      "(f32/f16/bf16, one row stride): head h of sequence b holds rows [offsets[b, h], offsets[b, h] +\n"
      "lengths[b, h]). Query head j uses KV head j // (q_heads // kv_heads). A length 0 gives zeros.");

  // ---- calibration accumulators --------------------------------------------------------------
  nb::class_<kvtrim::semantic_retrieval_score>(
      m, "SemanticRetrievalScore",
      "CompressKV's semantic-retrieval head score, fed while decoding probe prompts: per trial, an "
      "answer span; per decode step and layer, the last query's attention rows [q_head, key].")
      .def(nb::init<int, int>(), "layers"_a, "q_heads"_a)
      .def_prop_ro("layers", &kvtrim::semantic_retrieval_score::layers)
      .def_prop_ro("q_heads", &kvtrim::semantic_retrieval_score::q_heads)
      .def_prop_ro("trial_open", &kvtrim::semantic_retrieval_score::trial_open)
      .def_prop_ro("kept_trials", &kvtrim::semantic_retrieval_score::kept_trials)
      .def_prop_ro("discarded_trials", &kvtrim::semantic_retrieval_score::discarded_trials)
      .def("begin_trial", &kvtrim::semantic_retrieval_score::begin_trial, "span_tokens"_a, "span_begin"_a)
      .def(
          "on_step",
          [](kvtrim::semantic_retrieval_score& s, int layer, ro_array attn, std::int32_t token) {
            const f32_rows r = rows_of(attn, "attn");
            if (r.rows != s.q_heads()) throw nb::value_error("kvtrim: attn must have q_heads rows");
            s.on_step(layer, r.data, r.cols, token, r.stride);
          },
          "layer"_a, "attn"_a, "generated_token"_a, "attn: float32 [q_head, key].")
      .def(
          "observe",
          [](kvtrim::semantic_retrieval_score& s, int layer, ro_array attn) {
            const f32_rows r = rows_of(attn, "attn");
            if (r.rows != s.q_heads()) throw nb::value_error("kvtrim: attn must have q_heads rows");
            s.observe(layer, r.data, r.cols, r.stride);
          },
          "layer"_a, "attn"_a)
      .def("end_step", &kvtrim::semantic_retrieval_score::end_step, "generated_token"_a)
      .def("end_trial", &kvtrim::semantic_retrieval_score::end_trial, "keep"_a)
      .def("scores", &kvtrim::semantic_retrieval_score::scores, "[layer][q_head] mean over kept trials.")
      .def("merge", &kvtrim::semantic_retrieval_score::merge, "other"_a)
      .def("to_profile", &kvtrim::semantic_retrieval_score::to_profile, "profile"_a);

  nb::class_<kvtrim::retrieval_reasoning_score>(
      m, "RetrievalReasoningScore", "HeadKV's retrieval-reasoning head score, fed like SemanticRetrievalScore.")
      .def(nb::init<int, int>(), "layers"_a, "q_heads"_a)
      .def_prop_ro("layers", &kvtrim::retrieval_reasoning_score::layers)
      .def_prop_ro("q_heads", &kvtrim::retrieval_reasoning_score::q_heads)
      .def_prop_ro("trial_open", &kvtrim::retrieval_reasoning_score::trial_open)
      .def_prop_ro("kept_trials", &kvtrim::retrieval_reasoning_score::kept_trials)
      .def_prop_ro("discarded_trials", &kvtrim::retrieval_reasoning_score::discarded_trials)
      .def("begin_trial", &kvtrim::retrieval_reasoning_score::begin_trial, "span_begin"_a, "span_end"_a,
           "scale"_a = 1.0)
      .def(
          "on_step",
          [](kvtrim::retrieval_reasoning_score& s, int layer, ro_array attn) {
            const f32_rows r = rows_of(attn, "attn");
            if (r.rows != s.q_heads()) throw nb::value_error("kvtrim: attn must have q_heads rows");
            s.on_step(layer, r.data, r.cols, r.stride);
          },
          "layer"_a, "attn"_a)
      .def("end_trial", &kvtrim::retrieval_reasoning_score::end_trial, "keep"_a)
      .def("scores", &kvtrim::retrieval_reasoning_score::scores)
      .def("merge", &kvtrim::retrieval_reasoning_score::merge, "other"_a)
      .def("to_profile", &kvtrim::retrieval_reasoning_score::to_profile, "profile"_a);

  nb::class_<kvtrim::layer_eviction_error>(
      m, "LayerEvictionError",
      "CompressKV's layer eviction error: per sample (dataset), per layer and step, the relative error "
      "between the attention output with the full and with the compressed cache.")
      .def(nb::init<int, double>(), "layers"_a, "eps"_a = 1e-6)
      .def_prop_ro("layers", &kvtrim::layer_eviction_error::layers)
      .def("begin_sample", &kvtrim::layer_eviction_error::begin_sample, "dataset"_a)
      .def(
          "on_step",
          [](kvtrim::layer_eviction_error& s, int layer, ro_array full, ro_array comp) {
            check_cpu(full, "out_full");
            check_cpu(comp, "out_comp");
            if (!(full.dtype() == nb::dtype<float>()) || !(comp.dtype() == nb::dtype<float>()))
              throw nb::type_error("kvtrim: out_full and out_comp must be float32");
            if (full.size() != comp.size()) throw nb::value_error("kvtrim: out_full and out_comp sizes differ");
            auto contiguous = [](const ro_array& a) {
              int64_t expect = 1;
              for (size_t i = a.ndim(); i-- > 0;) {
                if (a.shape(i) > 1 && a.stride(i) != expect) return false;
                expect *= static_cast<int64_t>(a.shape(i));
              }
              return true;
            };
            if (!contiguous(full) || !contiguous(comp))
              throw nb::value_error("kvtrim: out_full and out_comp must be C-contiguous");
            s.on_step(layer, static_cast<const float*>(full.data()), static_cast<const float*>(comp.data()),
                      static_cast<index_t>(full.size()));
          },
          "layer"_a, "out_full"_a, "out_comp"_a)
      .def("end_sample", &kvtrim::layer_eviction_error::end_sample, "keep"_a = true)
      .def("datasets", &kvtrim::layer_eviction_error::datasets)
      .def("sums", &kvtrim::layer_eviction_error::sums, "dataset"_a)
      .def("weights", &kvtrim::layer_eviction_error::weights)
      .def("merge", &kvtrim::layer_eviction_error::merge, "other"_a)
      .def("to_profile", &kvtrim::layer_eviction_error::to_profile, "profile"_a);
}

