#pragma once
// kvtrim in the host's prefill step, exactly as an engine author plugs it in: after each layer's
// prefill attention the host hands kvtrim views of that layer's K, V and window queries; kvtrim
// compacts them in place; the host then keeps rows [0, len) of each head and frees the rest.
#include <cstdint>
#include <memory>
#include <vector>

#include "host/kv_store.hpp"
#include "host/model.hpp"
#include "kvtrim/compose/method.hpp"

namespace kvhost {

// The model's shape as kvtrim sees it.
kvtrim::model_shape kvtrim_shape(const model_config& cfg);

// One prompt's compression: owns the kvtrim sequence state and produces the prefill hook.
class compression_session {
 public:
  // `cache` must outlive the session; CAKE's cascade re-trims earlier layers inside it.
  compression_session(const kvtrim::method& m, kv_store& cache, int64_t prompt_length);

  // The hook to pass to model::prefill / model::generate (window = the method's window).
  prefill_hook hook();
  // The method's window (for `full`, at most the prompt: it keeps everything).
  int window() const { return static_cast<int>(seq_->window()); }
  // Seconds spent inside kvtrim (scoring, selection, compaction, re-trims) so far.
  double seconds() const { return seconds_; }

 private:
  std::vector<int64_t> on_layer(int layer, float* k, float* v, const float* q_window, int64_t n,
                                int64_t window);
  void retrim_earlier_layers();

  kvtrim::method method_;
  kv_store& cache_;
  std::unique_ptr<kvtrim::sequence_compressor> seq_;
  double seconds_ = 0;
};

}  // namespace kvhost
