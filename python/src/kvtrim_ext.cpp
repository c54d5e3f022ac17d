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
#include "kvtrim/compose/layer_store.hpp"
#include "kvtrim/compose/registry.hpp"
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

kvtrim::method make(const std::string& name, const kvtrim::model_shape& shape, kvtrim::budget b,
                    index_t window, const kvtrim::profile* prof, kvtrim::param_values params) {
  kvtrim::method_spec spec;
  spec.name = name;
  spec.target = b;
  spec.window = window;
  spec.params = std::move(params);
  spec.prof = prof;
  return kvtrim::make_method(spec, shape);
}

// kvtrim::layer_store over a Python object with compacted(layer, kv_head) -> (keys, values) and
// resized(layer, lengths). Called with the GIL held; keeps the arrays it handed out alive.
template <class T>
class py_store final : public kvtrim::layer_store<T> {
 public:
  explicit py_store(nb::object o) : o_(std::move(o)) {}
  kvtrim::layer_kv<T> compacted(int layer, index_t kv_head) override {
    nb::object r = o_.attr("compacted")(layer, kv_head);
    auto t = nb::cast<std::pair<any_array, any_array>>(r);
    held_.push_back(t.first);
    held_.push_back(t.second);
    check_cpu(t.first, "store keys");
    check_cpu(t.second, "store values");
    kvtrim::layer_kv<T> kv;
    if (elem_of(t.first, "store keys") != elem_of(t.second, "store values"))
      throw nb::type_error("kvtrim: store keys and values dtypes differ");
    kv.keys = view_of<T>(held_[held_.size() - 2], "store keys", "[kv_head, token, dim]");
    kv.values = view_of<T>(held_.back(), "store values", "[kv_head, token, dim]");
    kv.kv_head_offset = kv_head;
    return kv;
  }
  void resized(int layer, const std::vector<index_t>& lengths) override {
    o_.attr("resized")(layer, to_numpy(lengths));
  }

 private:
  nb::object o_;
  std::vector<any_array> held_;
};

// compress_layer; cascading methods (CAKE) re-trim earlier layers through the Python store.
std::vector<index_t> compress_with_store(py_sequence& s, int layer, const layer_arrays& a,
                                         nb::object store) {
  if (store.is_none()) {
    nb::gil_scoped_release nogil;
    return with_layer(a, [&](const auto& kv) { return s.seq->compress_layer(layer, kv); });
  }
  return with_layer(a, [&](const auto& kv) {
    using T = typename std::decay_t<decltype(kv.keys)>::element_type;
    py_store<T> st(store);
    return s.seq->compress_layer(layer, kv, st);
  });
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
  nb::enum_<kvtrim::param_kind>(m, "ParamKind", "Kind of a method parameter.")
      .value("integer", kvtrim::param_kind::integer)
      .value("real", kvtrim::param_kind::real)
      .value("boolean", kvtrim::param_kind::boolean)
      .value("choice", kvtrim::param_kind::choice);
  nb::class_<kvtrim::param_spec>(m, "ParamSpec", "One parameter of a method: key, kind, default (as text), range, help.")
      .def_ro("key", &kvtrim::param_spec::key)
      .def_ro("kind", &kvtrim::param_spec::kind)
      .def_ro("default", &kvtrim::param_spec::default_value)
      .def_ro("min", &kvtrim::param_spec::min)
      .def_ro("max", &kvtrim::param_spec::max)
      .def_ro("choices", &kvtrim::param_spec::choices)
      .def_ro("help", &kvtrim::param_spec::help)
      .def_ro("odd", &kvtrim::param_spec::odd)
      .def("__repr__", [](const kvtrim::param_spec& p) {
        return "ParamSpec(key='" + p.key + "', kind=" + kvtrim::to_string(p.kind) + ", default='" + p.default_value + "')";
      });
  nb::class_<kvtrim::method_info>(m, "MethodInfo",
                                  "One registry entry: name, paper, the four roles in words, its parameters and "
                                  "what it needs from a profile.")
      .def_ro("name", &kvtrim::method_info::name)
      .def_ro("paper", &kvtrim::method_info::paper)
      .def_ro("head_selector", &kvtrim::method_info::head_selector)
      .def_ro("token_scorer", &kvtrim::method_info::token_scorer)
      .def_ro("budget_allocator", &kvtrim::method_info::budget_allocator)
      .def_ro("params", &kvtrim::method_info::params)
      .def_ro("needs_semantic_retrieval", &kvtrim::method_info::needs_semantic_retrieval)
      .def_ro("needs_retrieval_reasoning", &kvtrim::method_info::needs_retrieval_reasoning)
      .def_ro("needs_layer_error", &kvtrim::method_info::needs_layer_error)
      .def_ro("cascades", &kvtrim::method_info::cascades)
      .def_prop_ro("needs_profile", &kvtrim::method_info::needs_profile)
      .def_prop_ro("needs_layer_inputs",
                   [](const kvtrim::method_info& i) {
                     return i.needs_out_proj || i.needs_attention_sums || i.needs_prompt_queries;
                   },
                   "Whether the method reads layer inputs beyond K, V and the window's queries (W_o, "
                   "the prefill attention's column sums, the pre-RoPE prompt queries), which the "
                   "binding does not take yet.")
      .def("__repr__", [](const kvtrim::method_info& i) { return "MethodInfo(name='" + i.name + "', paper='" + i.paper + "')"; });
  m.def("methods", &kvtrim::method_registry, nb::rv_policy::reference,
        "The method registry, in the docs' order (the one list every tool reads).");
  m.def("method_info", &kvtrim::find_method, "name"_a, nb::rv_policy::reference,
        "The registry entry of `name`; kvtrim.Error lists the accepted names.");
  m.def("method_names", &kvtrim::method_names, "Every method name, in the registry's order.");
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
            new (self) py_method{make(name, shape, budget_of(budget), window, p.get(), text), p, {}, false, window};
            self->params = self->m.params();
            self->cascades = self->m.cascades();
          },
          "name"_a, "shape"_a, "budget"_a = 64, "window"_a = 8, "profile"_a = nb::none(),
          "params"_a = std::map<std::string, param_value>{},
          "budget: an int is B, the average tokens kept per KV head per layer (window included);\n"
          "a float in (0, 1] is a ratio of the prompt. params: the method's own parameters by key\n"
          "(method_info(name).params). Raises kvtrim.Error for an unknown name, a bad parameter or a\n"
          "profile missing or made for another model.")
      .def_prop_ro("name", [](const py_method& x) { return x.m.name(); })
      .def_prop_ro("shape", [](const py_method& x) { return x.m.shape(); })
      .def_prop_ro("params", [](const py_method& x) { return x.params; },
                   "Every parameter's value as text, defaults included (what the method was built with).")
      .def_prop_ro("info", [](const py_method& x) { return x.m.info(); }, "The method's registry entry.")
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

