#include "engine/kv_store.hpp"

#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

namespace kvhost {
namespace {

int64_t round_up(int64_t n) { return (n + kv_store::granule - 1) / kv_store::granule * kv_store::granule; }

}  // namespace

kv_store::kv_store(int n_layer, int n_kv_head, int head_dim) { reset(n_layer, n_kv_head, head_dim); }

void kv_store::reset(int n_layer, int n_kv_head, int head_dim) {
  if (n_layer < 0 || n_kv_head < 0 || head_dim < 0)
    throw std::invalid_argument("kv_store: negative shape (" + std::to_string(n_layer) + " layers, " +
                                std::to_string(n_kv_head) + " KV heads, head_dim " + std::to_string(head_dim) + ")");
  heads_.clear();
  heads_.shrink_to_fit();
  heads_.resize(static_cast<size_t>(n_layer) * static_cast<size_t>(n_kv_head));
  n_layer_ = n_layer;
  n_kv_head_ = n_kv_head;
  head_dim_ = head_dim;
  n_past_ = 0;
}

kv_store::head_rows& kv_store::at(int layer, int head) {
  return const_cast<head_rows&>(static_cast<const kv_store&>(*this).at(layer, head));
}

const kv_store::head_rows& kv_store::at(int layer, int head) const {
  if (layer < 0 || layer >= n_layer_ || head < 0 || head >= n_kv_head_)
    throw std::out_of_range("kv_store: (layer " + std::to_string(layer) + ", head " + std::to_string(head) +
                            ") outside [0, " + std::to_string(n_layer_) + ") x [0, " + std::to_string(n_kv_head_) + ")");
  return heads_[static_cast<size_t>(layer) * static_cast<size_t>(n_kv_head_) + static_cast<size_t>(head)];
}

// realloc rather than new+copy: glibc moves large blocks with mremap and returns a shrunk
// block's tail to the allocator, so growing is cheap and shrinking really frees memory.
void kv_store::reallocate(head_rows& h, int64_t cap) const {
  if (cap == 0) {
    h.k.reset();
    h.v.reset();
    h.cap = 0;
    return;
  }
  const size_t bytes = static_cast<size_t>(cap) * static_cast<size_t>(head_dim_) * sizeof(float);
  for (buffer* b : {&h.k, &h.v}) {
    void* p = std::realloc(b->get(), bytes);
    if (!p) throw std::bad_alloc();
    (void)b->release();  // realloc took ownership of the old block
    b->reset(static_cast<float*>(p));
  }
  h.cap = cap;
}

std::vector<int64_t> kv_store::lengths(int layer) const {
  std::vector<int64_t> out(static_cast<size_t>(n_kv_head_));
  for (int h = 0; h < n_kv_head_; ++h) out[static_cast<size_t>(h)] = length(layer, h);
  return out;
}

void kv_store::assign(int layer, int head, const float* k_rows, const float* v_rows, int64_t len) {
  if (len < 0) throw std::invalid_argument("kv_store::assign: negative length " + std::to_string(len));
  auto& h = at(layer, head);
  h.len = 0;
  reallocate(h, round_up(len));
  const size_t n = static_cast<size_t>(len) * static_cast<size_t>(head_dim_);
  if (n != 0) {
    std::memcpy(h.k.get(), k_rows, n * sizeof(float));
    std::memcpy(h.v.get(), v_rows, n * sizeof(float));
  }
  h.len = len;
}

void kv_store::append(int layer, int head, const float* k_row, const float* v_row) {
  auto& h = at(layer, head);
  if (h.len == h.cap) reallocate(h, h.cap + granule);
  const size_t off = static_cast<size_t>(h.len) * static_cast<size_t>(head_dim_);
  std::memcpy(h.k.get() + off, k_row, static_cast<size_t>(head_dim_) * sizeof(float));
  std::memcpy(h.v.get() + off, v_row, static_cast<size_t>(head_dim_) * sizeof(float));
  ++h.len;
}

void kv_store::shrink(int layer, const std::vector<int64_t>& new_lengths) {
  if (new_lengths.size() != static_cast<size_t>(n_kv_head_))
    throw std::invalid_argument("kv_store::shrink: got " + std::to_string(new_lengths.size()) +
                                " lengths for layer " + std::to_string(layer) + ", expected " +
                                std::to_string(n_kv_head_) + " (one per KV head)");
  for (int h = 0; h < n_kv_head_; ++h) {
    const int64_t len = new_lengths[static_cast<size_t>(h)];
    if (len < 0 || len > length(layer, h))
      throw std::invalid_argument("kv_store::shrink: length " + std::to_string(len) + " for layer " +
                                  std::to_string(layer) + " head " + std::to_string(h) + " outside [0, " +
                                  std::to_string(length(layer, h)) + "]");
  }
  for (int h = 0; h < n_kv_head_; ++h) {
    auto& rows = at(layer, h);
    rows.len = new_lengths[static_cast<size_t>(h)];
    reallocate(rows, round_up(rows.len));
  }
}

size_t kv_store::allocated_bytes() const {
  size_t rows = 0;
  for (const auto& h : heads_) rows += static_cast<size_t>(h.cap);
  return rows * bytes_per_row();
}

int64_t kv_store::retained_tokens() const {
  int64_t rows = 0;
  for (const auto& h : heads_) rows += h.len;
  return rows;
}

size_t kv_store::retained_bytes() const { return static_cast<size_t>(retained_tokens()) * bytes_per_row(); }

}  // namespace kvhost
