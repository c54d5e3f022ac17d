// Per-head KV cache of the reference host. Every (layer, KV head) owns its own K and V
// allocations of [token][head_dim] floats, sized in granules of 16 tokens, so that after kvtrim
// compresses a head its memory is really given back: allocated bytes track retained tokens.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <vector>

namespace kvhost {

class kv_store {
 public:
  static constexpr int64_t granule = 16;  // rows per allocation step

  kv_store() = default;
  kv_store(int n_layer, int n_kv_head, int head_dim);

  // Drop all rows and take a (possibly new) shape; n_past() becomes 0.
  void reset(int n_layer, int n_kv_head, int head_dim);
  void clear() { reset(n_layer_, n_kv_head_, head_dim_); }

  int n_layer() const { return n_layer_; }
  int n_kv_head() const { return n_kv_head_; }
  int head_dim() const { return head_dim_; }

  int64_t length(int layer, int head) const { return at(layer, head).len; }
  int64_t capacity(int layer, int head) const { return at(layer, head).cap; }
  std::vector<int64_t> lengths(int layer) const;
  // Rows [0, length) of one head, [token][head_dim]; null when the head holds no allocation.
  float* k(int layer, int head) { return at(layer, head).k.get(); }
  float* v(int layer, int head) { return at(layer, head).v.get(); }
  const float* k(int layer, int head) const { return at(layer, head).k.get(); }
  const float* v(int layer, int head) const { return at(layer, head).v.get(); }

  // Replace a head's rows with a copy of len rows, allocated to exactly round_up(len, granule).
  void assign(int layer, int head, const float* k_rows, const float* v_rows, int64_t len);
  // Add one row at the end, growing the allocation by one granule when it is full.
  void append(int layer, int head, const float* k_row, const float* v_row);
  // Keep rows [0, new_lengths[h]) of each head of a layer and reallocate each head to
  // round_up(len, granule) rows. Throws std::invalid_argument (changing nothing) when the
  // count differs from n_kv_head() or a length is outside [0, current length].
  void shrink(int layer, const std::vector<int64_t>& new_lengths);

  // Bytes of one token in one KV head: its K row and V row.
  size_t bytes_per_row() const { return static_cast<size_t>(head_dim_) * 2 * sizeof(float); }
  size_t allocated_bytes() const;  // sum of capacities x bytes_per_row()
  size_t retained_bytes() const;   // sum of lengths x bytes_per_row()
  int64_t retained_tokens() const;  // sum of lengths over all layers and heads

  // Tokens the sequence has consumed, uncompressed: the position of the next token.
  int64_t n_past() const { return n_past_; }
  void set_n_past(int64_t n) { n_past_ = n; }

 private:
  struct free_deleter {
    void operator()(float* p) const { std::free(p); }
  };
  using buffer = std::unique_ptr<float, free_deleter>;
  struct head_rows {
    buffer k, v;
    int64_t len = 0, cap = 0;
  };

  head_rows& at(int layer, int head);
  const head_rows& at(int layer, int head) const;
  void reallocate(head_rows& h, int64_t cap) const;

  int n_layer_ = 0, n_kv_head_ = 0, head_dim_ = 0;
  int64_t n_past_ = 0;
  std::vector<head_rows> heads_;  // layer-major
};

}  // namespace kvhost
