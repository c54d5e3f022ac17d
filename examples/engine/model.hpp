// Llama-family forward pass of the reference host: weights dequantised to float, prefill as
// GEMMs with query-blocked causal attention, decode against the per-head kv_store. After each
// layer's prefill attention an optional hook (kvtrim) may compact that layer's K/V before it is
// moved into the store.
#pragma once

#include <Eigen/Core>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "engine/gguf.hpp"
#include "engine/kv_store.hpp"

namespace kvhost {

using matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using vec = Eigen::VectorXf;

struct model_config {
  std::string architecture;  // "llama"
  std::string name;          // general.name, empty if absent
  int n_layer = 0;
  int n_embd = 0;
  int n_ff = 0;
  int n_head = 0;
  int n_kv_head = 0;
  int head_dim = 0;
  int64_t n_ctx = 0;  // training context length
  int n_vocab = 0;
  double rope_base = 10000.0;
  double rms_eps = 1e-5;

  int group() const { return n_head / n_kv_head; }  // query heads per KV head (G)
  // Reads <arch>.* keys; throws gguf_error for an unsupported architecture or an inconsistent shape.
  static model_config from_gguf(const gguf_file& f);
};

// Called once per layer during prefill, after attention, with the layer's full-length K and V
// ([kv_head][n][head_dim], after RoPE; rows may be compacted in place within each head) and the
// last `window` queries ([q_head][window][head_dim], after RoPE). Returns the retained length of
// each KV head: rows [0, len) are kept and copied into the store; the full-length buffers are
// freed after the call.
//
// Some methods read more of the layer (kvtrim's method_info::needs_*); a hook made with
// prefill_hook::with_extras says which, and the prefill then computes them for it (only then):
struct layer_extras {
  const float* attention_sums = nullptr;  // [n_head][n]: column sums of the causal attention over
                                          // every prompt query (wants_attention_sums)
  const float* prompt_queries = nullptr;  // [n][row stride q_stride], head h at column h * head_dim:
  int64_t q_stride = 0;                   // the queries BEFORE RoPE (wants_prompt_queries)
  const float* wo = nullptr;              // always: o_proj weight, [wo_rows = n_embd][n_head * head_dim] row-major
  int64_t wo_rows = 0;
  const double* inv_freq = nullptr;       // always: head_dim / 2 RoPE frequencies (pairs (i, i + d/2))
};
using prefill_hook_fn = std::function<std::vector<int64_t>(int layer, float* k, float* v, const float* q_window,
                                                           int64_t n, int64_t window)>;
using prefill_hook_extras_fn = std::function<std::vector<int64_t>(
    int layer, float* k, float* v, const float* q_window, int64_t n, int64_t window, const layer_extras& extras)>;
class prefill_hook {
 public:
  prefill_hook() = default;
  template <class F, std::enable_if_t<std::is_invocable_r_v<std::vector<int64_t>, F&, int, float*, float*,
                                                            const float*, int64_t, int64_t>,
                                      int> = 0>
  prefill_hook(F f) : fn_(std::move(f)) {}  // NOLINT(google-explicit-constructor): any plain hook
  static prefill_hook with_extras(prefill_hook_extras_fn f, bool attention_sums, bool prompt_queries) {
    prefill_hook h;
    h.extras_fn_ = std::move(f);
    h.sums_ = attention_sums;
    h.queries_ = prompt_queries;
    return h;
  }
  explicit operator bool() const { return fn_ || extras_fn_; }
  bool wants_attention_sums() const { return sums_; }
  bool wants_prompt_queries() const { return queries_; }
  std::vector<int64_t> operator()(int layer, float* k, float* v, const float* q_window, int64_t n, int64_t window,
                                  const layer_extras& e = {}) const {
    return extras_fn_ ? extras_fn_(layer, k, v, q_window, n, window, e) : fn_(layer, k, v, q_window, n, window);
  }

 private:
  prefill_hook_fn fn_;
  prefill_hook_extras_fn extras_fn_;
  bool sums_ = false, queries_ = false;
};

// Optional observer of every decode step, called per layer right after its attention: q is the
// step's query ([n_head][head_dim], after RoPE), `cache` holds this layer's rows including the new
// token, attn_out is the attention output ([n_head][head_dim], before o_proj). Calibration
// recomputes what it needs from these, so the attention code itself stays untouched.
using decode_observer =
    std::function<void(int layer, const float* q, const kv_store& cache, const float* attn_out)>;
struct prefill_result {
  std::vector<float> logits;  // last position, n_vocab
  double seconds = 0;         // whole prefill, hook included
  double hook_seconds = 0;    // inside the hook
};

struct decode_result {
  std::vector<int32_t> tokens;  // generated, stop token excluded
  bool stopped = false;         // ended on a stop token (not on max_new_tokens or the context)
  int64_t steps = 0;            // decode_step calls
  double seconds = 0;
};

struct generate_result {
  std::vector<int32_t> tokens;  // generated, stop token excluded
  bool stopped = false;         // ended on a stop token (not on max_new_tokens or the context)
  prefill_result prefill;
  int64_t decode_steps = 0;
  double decode_seconds = 0;
  double decode_tokens_per_second = 0;
};

// Immutable after construction: const methods may run concurrently on separate caches. Work is
// split over OpenMP threads (OMP_NUM_THREADS).
class model {
 public:
  // Dequantises every weight; `f` may be closed afterwards. Throws gguf_error for an unsupported
  // architecture, a missing tensor or a tensor of the wrong shape or type.
  explicit model(const gguf_file& f);
  model(const model&) = delete;
  model& operator=(const model&) = delete;

  const model_config& config() const { return cfg_; }
  // Layer l's o_proj weight, [n_embd][n_head * head_dim] row-major; the RoPE frequencies.
  const float* out_proj(int layer) const { return layers_.at(static_cast<size_t>(layer)).wo.data(); }
  const std::vector<double>& rope_frequencies() const { return inv_freq_; }
  // RoPE of one token at `pos` (any integer: a negative one turns back), n_heads x head_dim, in place.
  void rope(float* x, int n_heads, int64_t pos) const;

  // Resets `cache` to this model's shape, runs the prompt and leaves its (possibly compressed)
  // K/V in the cache with n_past() = tokens.size(). `window` (1..n) is only used with a hook.
  // Throws std::invalid_argument for an empty prompt, one longer than the context, a token
  // outside the vocabulary or a bad window (the cache is untouched), or a bad hook result (the
  // cache is left empty).
  prefill_result prefill(const std::vector<int32_t>& tokens, kv_store& cache, const prefill_hook& hook = {},
                         int window = 8) const;
  // One token at position cache.n_past(); appends its K/V to every head and returns the logits.
  std::vector<float> decode_step(int32_t token, kv_store& cache, const decode_observer& observe = {}) const;
  // Greedy decoding after a prefill: the argmax of `first_logits` (the prefill's last logits), then
  // decode_step until a stop token, max_new_tokens or the context end. `on_step` (optional) runs
  // after each decode_step with the token it chose, for callers that score the generated tokens.
  decode_result decode_greedy(kv_store& cache, const std::vector<float>& first_logits, int max_new_tokens,
                              const std::vector<int32_t>& stop_tokens, const decode_observer& observe = {},
                              const std::function<void(int32_t)>& on_step = {}) const;
  // The attention output projection of `layer` (o_proj): out[n_embd] = W_o · attn[n_head * head_dim].
  void project_attention_output(int layer, const float* attn, float* out) const;
  // Greedy generation: prefill, then decode_greedy.
  generate_result generate(const std::vector<int32_t>& prompt, kv_store& cache, int max_new_tokens,
                           const std::vector<int32_t>& stop_tokens, const prefill_hook& hook = {},
                           int window = 8, const decode_observer& observe = {}) const;

 private:
  struct layer_weights {
    vec attn_norm, ffn_norm;
    // [out][in]. Q, K, V rows are stacked (and gate, up) so one GEMM/GEMV computes them together.
    matrix wqkv, wo;
    matrix w_gate_up, w_down;
  };

  const matrix& lm_head() const { return tied_ ? tok_embd_ : output_; }
  void check_token(int32_t t) const;

  model_config cfg_;
  matrix tok_embd_;  // [vocab][n_embd]
  matrix output_;    // [vocab][n_embd]; empty when tied to tok_embd_
  bool tied_ = false;
  vec out_norm_;
  std::vector<layer_weights> layers_;
  std::vector<double> inv_freq_;  // head_dim / 2 rotary frequencies
};

// Stop tokens of a chat model: tokenizer.ggml.eos_token_id and the ids of <|im_end|> and
// <|endoftext|> where the vocabulary has them.
std::vector<int32_t> default_stop_tokens(const gguf_file& f);

// Peak and current resident memory of this process (VmHWM / VmRSS from /proc/self/status), bytes.
size_t peak_rss_bytes();
size_t current_rss_bytes();

// Path of the default model: $KVTRIM_MODEL, else ~/.cache/kvtrim/SmolLM2-135M-Instruct.Q4_1.gguf.
std::string default_model_path();

}  // namespace kvhost
