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
#include "kvtrim/decode/decode_compressor.hpp"
#include "kvtrim/decode/query_ring.hpp"

namespace kvhost {

// The model's shape as kvtrim sees it.
kvtrim::model_shape kvtrim_shape(const model_config& cfg);

// The store's heads as kvtrim views (kvtrim::layer_store): each (layer, KV head) is its own
// allocation, so kvtrim works on one-head views and the store then releases the freed rows.
// CAKE's re-trims of earlier layers and decode-time compression go through it.
struct host_layer_store final : kvtrim::layer_store<float> {
  explicit host_layer_store(kv_store& c) : cache(c) {}
  kvtrim::layer_kv<float> compacted(int layer, int64_t kv_head) override;
  void resized(int layer, const std::vector<int64_t>& lengths) override;
  kv_store& cache;
  const double* inv_freq = nullptr;  // the model's RoPE, for a re-trim that re-rotates keys
};

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
  kvtrim::method method_;
  host_layer_store store_;  // the host's side of CAKE's re-trims
  std::unique_ptr<kvtrim::sequence_compressor> seq_;
  double seconds_ = 0;
};

// Decode-time compression in the host's decode loop (kvtrim/decode/): each step's queries go into
// a ring of the last w per layer (seeded from the prefill's window queries), and after each step
// every layer the compressor finds due is cut back to its target per KV head; the store frees the
// rows at once (allocated bytes track retained tokens). Positions need nothing: keys keep their
// absolute RoPE and decoding continues at n_past.
class decode_session {
 public:
  // `dc` and `cache` must outlive the session.
  decode_session(const kvtrim::decode_compressor& dc, kv_store& cache);

  // `inner` (may be empty: the prefill keeps every row) with the ring seeded from each layer's
  // window queries; pass the method's window to the prefill so the ring starts full.
  prefill_hook wrap(prefill_hook inner);
  // Pushes each decode step's queries into the ring (pass to decode_step / decode_greedy).
  decode_observer observer();
  // After each decode step: compresses the due layers. Returns whether any layer was compressed.
  bool after_step();

  double seconds() const { return seconds_; }          // inside kvtrim at decode
  int64_t compressions() const { return compressions_; }  // layer compression steps

 private:
  const kvtrim::decode_compressor& dc_;
  kv_store& cache_;
  host_layer_store store_;
  kvtrim::query_ring<float> ring_;
  std::vector<int64_t> since_;  // per layer: decode steps since its last compression
  double seconds_ = 0;
  int64_t compressions_ = 0;
};

}  // namespace kvhost
