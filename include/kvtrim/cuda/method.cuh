#pragma once
// The runtime front of the CUDA backend, over the same registry as the CPU's make_method
// (compose/registry.hpp): every registered method's build() composes its role objects, and this
// front's composer turns them into cuda::compressor<Sel, Scorer, Alloc> (compressor.cuh maps each
// role to its device implementation), so a registered method gets its device path by its roles.
//
//   kvtrim::method_spec spec;  spec.name = "adakv";  spec.target = kvtrim::budget::tokens(1024);
//   auto m = kvtrim::cuda::make_method(spec, shape);        // validates like the CPU front
//   auto seq = m.begin(n);                                  // host, once per sequence
//   std::size_t bytes = seq->workspace_bytes(kv_heads, kvtrim::cuda::element::bf16);
//   seq->compress_layer(layer, kv, lengths_dev, ws, bytes, stream);   // kv: device views
//
// Methods whose token scorer has no device specialisation (tova, keydiff, criticalkv, h2o,
// expected_attention so far) are rejected by
// make_method with a kvtrim::error naming them.
// seq->syncs() says whether a layer's step syncs the stream (CAKE: its cascade reads two
// doubles on the host). CAKE's re-trims of earlier layers are not run on the device yet (each
// layer is compacted to its budget when it arrives; docs/INTEGRATION.md, "GPU path").
#include <memory>
#include <string>

#include "kvtrim/compose/method.hpp"
#include "kvtrim/compose/registry.hpp"
#include "kvtrim/cuda/compressor.cuh"

namespace kvtrim {
namespace cuda {

enum class element { f32, f16, bf16 };

class sequence {
 public:
  virtual ~sequence() = default;
  virtual index_t prompt_length() const = 0;
  virtual bool syncs() const = 0;
  virtual std::size_t workspace_bytes(index_t kv_heads, element e) const = 0;
  virtual void compress_layer(int layer, const layer_kv<float>& kv, int* lengths, void* ws,
                              std::size_t bytes, cudaStream_t s, index_t* host_lengths = nullptr) = 0;
  virtual void compress_layer(int layer, const layer_kv<half>& kv, int* lengths, void* ws,
                              std::size_t bytes, cudaStream_t s, index_t* host_lengths = nullptr) = 0;
  virtual void compress_layer(int layer, const layer_kv<bfloat16>& kv, int* lengths, void* ws,
                              std::size_t bytes, cudaStream_t s, index_t* host_lengths = nullptr) = 0;
};

namespace detail {

struct method_base {
  virtual ~method_base() = default;
  virtual std::unique_ptr<sequence> begin(index_t n) const = 0;
};

template <class C>
class erased_sequence final : public sequence {
 public:
  erased_sequence(std::shared_ptr<const C> c, index_t n) : c_(std::move(c)), plan_(c_->begin(n)) {}
  index_t prompt_length() const override { return plan_.prompt_length; }
  bool syncs() const override { return C::site == budget_site::host_stats; }
  std::size_t workspace_bytes(index_t kv_heads, element e) const override {
    return e == element::f32   ? c_->template workspace_bytes<float>(plan_, kv_heads)
           : e == element::f16 ? c_->template workspace_bytes<half>(plan_, kv_heads)
                               : c_->template workspace_bytes<bfloat16>(plan_, kv_heads);
  }
  void compress_layer(int l, const layer_kv<float>& kv, int* len, void* ws, std::size_t b,
                      cudaStream_t s, index_t* hl) override {
    c_->compress_layer(plan_, l, kv, len, ws, b, s, hl);
  }
  void compress_layer(int l, const layer_kv<half>& kv, int* len, void* ws, std::size_t b,
                      cudaStream_t s, index_t* hl) override {
    c_->compress_layer(plan_, l, kv, len, ws, b, s, hl);
  }
  void compress_layer(int l, const layer_kv<bfloat16>& kv, int* len, void* ws, std::size_t b,
                      cudaStream_t s, index_t* hl) override {
    c_->compress_layer(plan_, l, kv, len, ws, b, s, hl);
  }

 private:
  std::shared_ptr<const C> c_;
  typename C::plan plan_;
};

template <class C>
struct method_impl final : method_base {
  explicit method_impl(C c) : c_(std::make_shared<const C>(std::move(c))) {}
  std::unique_ptr<sequence> begin(index_t n) const override {
    return std::make_unique<erased_sequence<C>>(c_, n);
  }
  std::shared_ptr<const C> c_;
};

// The device composer: role objects -> cuda::compressor<Sel, Scorer, Alloc>, type-erased.
struct device_composer {
  model_shape shape;
  compress_options options;
  const char* name = "";
  template <class Sel, class Scorer, class Alloc>
  std::shared_ptr<const method_base> operator()(Sel sel, Scorer sc, Alloc al) const {
    if constexpr (has_device_scorer<Scorer>::value) {
      using C = compressor<Sel, Scorer, Alloc>;
      return std::make_shared<method_impl<C>>(C(shape, options, std::move(sel), std::move(sc), std::move(al)));
    } else {
      kvtrim::detail::fail("method '", name, "' has no CUDA path yet (its token scorer has no "
                           "kvtrim::cuda::device_scorer specialisation)");
    }
  }
};

}  // namespace detail

class method {
 public:
  const method_spec& spec() const { return spec_; }
  std::unique_ptr<sequence> begin(index_t prompt_length) const { return impl_->begin(prompt_length); }

 private:
  friend method make_method(const method_spec& spec, const model_shape& shape);
  method_spec spec_;
  std::shared_ptr<const detail::method_base> impl_;
};

// Builds the named method's device path; the same validation and errors as kvtrim::make_method.
inline method make_method(const method_spec& spec, const model_shape& shape) {
  shape.validate();
  const method_info& info = find_method(spec.name);
  kvtrim::detail::require(spec.window >= 1, "window ", spec.window, " must be >= 1");
  const param_set ps(spec.name, info.params, spec.params);
  kvtrim::detail::check_profile_for(info, spec.prof, shape);
  const build_args args{ps, spec.prof};
  const detail::device_composer compose{shape, compress_options{spec.target, spec.window},
                                        spec.name.c_str()};
  // CAKE's cascade re-trims layers compressed earlier; the device has no re-trim yet, and a
  // host that cannot re-trim must not get a cache silently over budget (the CPU front's rule).
  kvtrim::detail::require(!info.cascades, "method '", spec.name, "' re-trims earlier layers as "
                          "later ones arrive; the CUDA backend has no re-trim yet (use the CPU "
                          "path, or cuda::compressor's split step with your own re-trim)");
  kvtrim::detail::require(!spec.rerotate_keys, "method '", spec.name, "': re-rotating kept keys "
                          "(method_spec::rerotate_keys) has no CUDA path yet (use the CPU path)");
  method m;
  m.spec_ = spec;
  for_each_method([&](auto entry) {
    if (spec.name == decltype(entry)::name) m.impl_ = decltype(entry)::build(compose, args);
  });
  return m;
}

}  // namespace cuda
}  // namespace kvtrim
