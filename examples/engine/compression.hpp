#pragma once
// kvtrim in the host's prefill step, exactly as an engine author plugs it in: after each layer's
// prefill attention the host hands kvtrim views of that layer's K, V and window queries; kvtrim
// compacts them in place; the host then keeps rows [0, len) of each head and frees the rest.
#include <cstdint>
#include <memory>
#include <vector>

#include "engine/kv_store.hpp"
#include "engine/model.hpp"
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
                                int64_t window, const layer_extras& extras);
  // The host's side of CAKE's re-trims: the store's heads as kvtrim views.
  struct store final : kvtrim::layer_store<float> {
    explicit store(kv_store& c) : cache(c) {}
    kvtrim::layer_kv<float> compacted(int layer, int64_t kv_head) override;
    void resized(int layer, const std::vector<int64_t>& lengths) override;
    kv_store& cache;
    const double* inv_freq = nullptr;  // the model's RoPE, for a re-trim that re-rotates keys
  };

  kvtrim::method method_;
  store store_;
  std::unique_ptr<kvtrim::sequence_compressor> seq_;
  double seconds_ = 0;
};

}  // namespace kvhost
