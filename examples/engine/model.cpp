// One file over 400 lines: the forward pass. Weight loading, prefill, decode_step and generate share
// the private kernels at the top (RMS norm, RoPE tables, causal attention, SwiGLU); a split would
// put those in a header only this file reads.
#include "engine/model.hpp"

#include "kvtrim/attention/ragged_decode.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <stdexcept>

namespace kvhost {
namespace {

using clock_type = std::chrono::steady_clock;
using row_map = Eigen::Map<matrix>;
using const_row_map = Eigen::Map<const matrix>;
using strided_map = Eigen::Map<const matrix, 0, Eigen::OuterStride<>>;

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

int positive_int(const gguf_file& f, const std::string& key) {
  const uint64_t v = f.get_uint(key);
  if (v == 0 || v > static_cast<uint64_t>(std::numeric_limits<int>::max()))
    throw gguf_error(f.path() + ": " + key + " = " + std::to_string(v) + " outside [1, " +
                     std::to_string(std::numeric_limits<int>::max()) + "]");
  return static_cast<int>(v);
}

std::string dims_str(const std::vector<uint64_t>& d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

// A [rows][cols] weight stored by ggml as ne = {cols, rows}.
matrix load_matrix(const gguf_file& f, const std::string& name, int rows, int cols) {
  const auto& t = f.tensor(name);
  const std::vector<uint64_t> want{static_cast<uint64_t>(cols), static_cast<uint64_t>(rows)};
  if (t.dims != want)
    throw gguf_error(f.path() + ": tensor '" + name + "' has shape " + dims_str(t.dims) + ", expected " + dims_str(want));
  matrix m(rows, cols);
  f.dequantize_into(t, m.data());
  return m;
}

vec load_vector(const gguf_file& f, const std::string& name, int n) {
  const auto& t = f.tensor(name);
  if (t.dims != std::vector<uint64_t>{static_cast<uint64_t>(n)})
    throw gguf_error(f.path() + ": tensor '" + name + "' has shape " + dims_str(t.dims) + ", expected [" +
                     std::to_string(n) + "]");
  vec v(n);
  f.dequantize_into(t, v.data());
  return v;
}

// llama.cpp's converter reorders each head's rows of attn_q/attn_k so that adjacent-pair RoPE
// equals Hugging Face's half-split RoPE: gguf row 2j+s of a head is HF row s*hd/2+j. Undo it, so
// that Q and K (and what kvtrim sees) are in HF's layout and half-split RoPE applies.
void unpermute_heads(matrix& w, int n_heads) {
  const int hd = static_cast<int>(w.rows()) / n_heads;
  const int half = hd / 2;
  matrix head(hd, w.cols());
  for (int h = 0; h < n_heads; ++h) {
    head = w.middleRows(static_cast<Eigen::Index>(h) * hd, hd);
    for (int s = 0; s < 2; ++s)
      for (int j = 0; j < half; ++j) w.row(static_cast<Eigen::Index>(h) * hd + s * half + j) = head.row(2 * j + s);
  }
}

// Rows of x scaled to unit RMS, times the norm weight.
void rms_norm_rows(const matrix& x, Eigen::Index r0, Eigen::Index rows, const vec& w, float eps, matrix& out) {
  out.resize(rows, x.cols());
#pragma omp parallel for schedule(static)
  for (Eigen::Index r = 0; r < rows; ++r) {
    const float ms = x.row(r0 + r).squaredNorm() / static_cast<float>(x.cols());
    out.row(r) = (x.row(r0 + r).array() * (1.0f / std::sqrt(ms + eps)) * w.transpose().array()).matrix();
  }
}

void rms_norm(const float* x, const vec& w, float eps, float* out) {
  Eigen::Map<const vec> xv(x, w.size());
  const float ms = xv.squaredNorm() / static_cast<float>(w.size());
  Eigen::Map<vec>(out, w.size()) = (xv.array() * (1.0f / std::sqrt(ms + eps)) * w.array()).matrix();
}

// y = W x with the rows split over threads (Eigen's GEMV is single-threaded).
void matvec(const matrix& w, const float* x, float* y) {
  constexpr Eigen::Index chunk = 256;
  const Eigen::Index rows = w.rows();
  Eigen::Map<const vec> xv(x, w.cols());
#pragma omp parallel for schedule(static)
  for (Eigen::Index r0 = 0; r0 < rows; r0 += chunk) {
    const Eigen::Index r = std::min(chunk, rows - r0);
    Eigen::Map<vec>(y + r0, r).noalias() = w.middleRows(r0, r) * xv;
  }
}

// Half-split rotation of one head vector: pairs (i, i + hd/2) by angle pos * inv_freq[i].
inline void rotate(float* x, const float* cos_t, const float* sin_t, int half) {
  for (int i = 0; i < half; ++i) {
    const float x0 = x[i], x1 = x[i + half];
    x[i] = x0 * cos_t[i] - x1 * sin_t[i];
    x[i + half] = x1 * cos_t[i] + x0 * sin_t[i];
  }
}

void rope_tables(const std::vector<double>& inv_freq, int64_t pos, float* cos_t, float* sin_t) {
  for (size_t i = 0; i < inv_freq.size(); ++i) {
    const double a = static_cast<double>(pos) * inv_freq[i];
    cos_t[i] = static_cast<float>(std::cos(a));
    sin_t[i] = static_cast<float>(std::sin(a));
  }
}

// Exact causal attention over a whole prompt. q and out are [n][n_head * hd] (head h at column
// h * hd); k, v are [n_kv][n][hd]. Work items are (KV head, block of queries): the G query heads
// of a KV head are stacked so one GEMM scores them all. Keys go by tiles with an online softmax
// (running max and sum per row), so a tile's scores stay in cache and nothing is O(n^2) in memory.
// With col_sums ([n_head][n], zeroed by the caller), also the column sums of the attention
// weights over every query: a second Q.K^T pass once every row's maximum and sum are final (no
// P.V product), by key tile so each sum is added in one fixed order.
void causal_attention(const strided_map& q, const float* k, const float* v, const model_config& c, matrix& out,
                      float* col_sums = nullptr) {
  constexpr int64_t block = 64, tile = 256;
  static_assert(tile % block == 0, "a key tile must never start inside a query block");
  const int64_t n = q.rows();
  const int hd = c.head_dim, G = c.group();
  const int64_t n_blocks = (n + block - 1) / block;
  const int64_t items = n_blocks * c.n_kv_head;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  out.resize(n, q.cols());
  std::vector<float> row_max(col_sums ? static_cast<size_t>(c.n_head) * static_cast<size_t>(n) : 0);
  std::vector<float> row_sum(row_max.size());
#pragma omp parallel
  {
    matrix qs(G * block, hd), s(G * block, tile), o(G * block, hd);
    Eigen::ArrayXf m(G * block), sum(G * block);
#pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < items; ++it) {
      const int64_t b = n_blocks - 1 - it / c.n_kv_head;  // longest blocks first, for balance
      const int g = static_cast<int>(it % c.n_kv_head);
      const int64_t q0 = b * block, rows = std::min(block, n - q0), kend = q0 + rows, R = G * rows;
      for (int gi = 0; gi < G; ++gi)
        qs.middleRows(gi * rows, rows) = q.block(q0, static_cast<int64_t>(g * G + gi) * hd, rows, hd);
      auto ob = o.topRows(R);
      ob.setZero();
      m.head(R).setConstant(-std::numeric_limits<float>::infinity());
      sum.head(R).setZero();
      for (int64_t t0 = 0; t0 < kend; t0 += tile) {
        const int64_t tw = std::min(tile, kend - t0);
        auto st = s.topLeftCorner(R, tw);
        st.noalias() = qs.topRows(R) * const_row_map(k + (g * n + t0) * hd, tw, hd).transpose();
        for (int64_t r = 0; r < R; ++r) {
          const int64_t valid = std::min(tw, q0 + r % rows + 1 - t0);  // causal: keys up to the position
          auto row = st.row(r);
          const float m_new = std::max(m(r), row.head(valid).maxCoeff());
          const float correction = std::exp((m(r) - m_new) * scale);  // 0 on the first tile
          row.head(valid) = ((row.head(valid).array() - m_new) * scale).exp().matrix();
          row.tail(tw - valid).setZero();
          sum(r) = sum(r) * correction + row.head(valid).sum();
          ob.row(r) *= correction;
          m(r) = m_new;
        }
        ob.noalias() += st * const_row_map(v + (g * n + t0) * hd, tw, hd);
      }
      for (int gi = 0; gi < G; ++gi)
        out.block(q0, static_cast<int64_t>(g * G + gi) * hd, rows, hd) =
            (ob.middleRows(gi * rows, rows).array().colwise() / sum.segment(gi * rows, rows)).matrix();
      if (col_sums)  // the rows' final max and sum, for the column pass below
        for (int64_t r = 0; r < R; ++r) {
          const size_t at = static_cast<size_t>((static_cast<int64_t>(g * G) + r / rows) * n + q0 + r % rows);
          row_max[at] = m(r);
          row_sum[at] = sum(r);
        }
    }
  }
  if (!col_sums) return;
  // Column sums: each task owns one key tile of one KV head's G query heads and adds, in a fixed
  // order, exp((s - max) / sqrt(d)) / sum over every query block that sees the tile (a second
  // Q.K^T, no P.V): the same bits whatever the thread count or schedule.
  const int64_t n_tiles = (n + tile - 1) / tile;
#pragma omp parallel
  {
    matrix qs(G * block, hd), s(G * block, tile);
#pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < n_tiles * c.n_kv_head; ++it) {
      const int g = static_cast<int>(it % c.n_kv_head);
      const int64_t t0 = (it / c.n_kv_head) * tile, tw = std::min(tile, n - t0);
      for (int64_t q0 = t0; q0 < n; q0 += block) {  // tile % block == 0: blocks start at t0
        const int64_t rows = std::min(block, n - q0), R = G * rows;
        for (int gi = 0; gi < G; ++gi)
          qs.middleRows(gi * rows, rows) = q.block(q0, static_cast<int64_t>(g * G + gi) * hd, rows, hd);
        auto st = s.topLeftCorner(R, tw);
        st.noalias() = qs.topRows(R) * const_row_map(k + (g * n + t0) * hd, tw, hd).transpose();
        for (int64_t r = 0; r < R; ++r) {
          const int64_t valid = std::min(tw, q0 + r % rows + 1 - t0);
          const int64_t head = static_cast<int64_t>(g * G) + r / rows;
          const size_t at = static_cast<size_t>(head * n + q0 + r % rows);
          Eigen::Map<Eigen::ArrayXf>(col_sums + head * n + t0, valid) +=
              ((st.row(r).head(valid).array() - row_max[at]) * scale).exp() / row_sum[at];
        }
      }
    }
  }
}

// Rows of gate_up are [gate | up]; the left half becomes silu(gate) * up.
template <class M>
void silu_mul(M&& gate_up, Eigen::Index n_ff) {
  auto gate = gate_up.leftCols(n_ff).array();
  gate = gate / (1.0f + (-gate).exp()) * gate_up.rightCols(n_ff).array();
}

int32_t argmax(const std::vector<float>& v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

}  // namespace

model_config model_config::from_gguf(const gguf_file& f) {
  model_config c;
  c.architecture = f.get_string("general.architecture");
  if (c.architecture != "llama")
    throw gguf_error(f.path() + ": unsupported architecture '" + c.architecture + "' (supported: llama)");
  const std::string a = c.architecture + ".";
  if (f.has("general.name")) c.name = f.get_string("general.name");
  c.n_layer = positive_int(f, a + "block_count");
  c.n_embd = positive_int(f, a + "embedding_length");
  c.n_ff = positive_int(f, a + "feed_forward_length");
  c.n_head = positive_int(f, a + "attention.head_count");
  c.n_kv_head = f.has(a + "attention.head_count_kv") ? positive_int(f, a + "attention.head_count_kv") : c.n_head;
  c.n_ctx = positive_int(f, a + "context_length");
  if (f.has(a + "rope.freq_base")) c.rope_base = f.get_float(a + "rope.freq_base");
  if (f.has(a + "attention.layer_norm_rms_epsilon")) c.rms_eps = f.get_float(a + "attention.layer_norm_rms_epsilon");

  const auto bad = [&](const std::string& what) { return gguf_error(f.path() + ": " + what); };
  if (c.n_embd % c.n_head != 0)
    throw bad("embedding_length " + std::to_string(c.n_embd) + " is not a multiple of head_count " + std::to_string(c.n_head));
  c.head_dim = c.n_embd / c.n_head;
  if (c.head_dim % 2 != 0) throw bad("head dimension " + std::to_string(c.head_dim) + " is odd (RoPE needs pairs)");
  if (c.n_head % c.n_kv_head != 0)
    throw bad("head_count " + std::to_string(c.n_head) + " is not a multiple of head_count_kv " + std::to_string(c.n_kv_head));
  for (const char* key : {"attention.key_length", "attention.value_length", "rope.dimension_count"})
    if (f.has(a + key) && f.get_uint(a + key) != static_cast<uint64_t>(c.head_dim))
      throw bad(a + key + " = " + std::to_string(f.get_uint(a + key)) + " is not supported (the host needs " +
                std::to_string(c.head_dim) + " = embedding_length / head_count)");
  if (f.has(a + "rope.scaling.type") && f.get_string(a + "rope.scaling.type") != "none")
    throw bad("RoPE scaling '" + f.get_string(a + "rope.scaling.type") + "' is not supported (supported: none)");
  if (f.has_tensor("rope_freqs.weight")) throw bad("per-frequency RoPE factors (rope_freqs.weight) are not supported");
  if (!(c.rope_base > 0) || !(c.rms_eps > 0)) throw bad("rope.freq_base and layer_norm_rms_epsilon must be positive");

  const auto& emb = f.tensor("token_embd.weight");
  if (emb.dims.size() != 2 || emb.dims[0] != static_cast<uint64_t>(c.n_embd) ||
      emb.dims[1] > static_cast<uint64_t>(std::numeric_limits<int32_t>::max()))
    throw bad("tensor 'token_embd.weight' has shape " + dims_str(emb.dims) + ", expected [" + std::to_string(c.n_embd) + ", vocab]");
  if (emb.dims[1] == 0) throw bad("tensor 'token_embd.weight' has a vocabulary of 0 tokens");
  c.n_vocab = static_cast<int>(emb.dims[1]);
  // Every layer has 9 tensors: a block_count the tensor table cannot hold is refused before the
  // constructor sizes its layer table by it (found by fuzzing: 2^31 layers in a 3 KB file).
  if (static_cast<uint64_t>(c.n_layer) * 9 > f.tensors().size())
    throw bad("block_count " + std::to_string(c.n_layer) + " needs " + std::to_string(9 * static_cast<uint64_t>(c.n_layer)) +
              " layer tensors; the file has " + std::to_string(f.tensors().size()) + " tensors in all");
  // The constructor's sizes: 2 * n_ff rows of gate_up, n_embd + 2 * kv_dim rows of wqkv, all in int.
  const int64_t kv_dim = static_cast<int64_t>(c.n_kv_head) * c.head_dim;
  if (2 * static_cast<int64_t>(c.n_ff) > std::numeric_limits<int>::max())
    throw bad("feed_forward_length " + std::to_string(c.n_ff) + " is too large (2 x n_ff must fit an int)");
  if (static_cast<int64_t>(c.n_embd) + 2 * kv_dim > std::numeric_limits<int>::max())
    throw bad("embedding_length " + std::to_string(c.n_embd) + " is too large (q + k + v rows must fit an int)");
  return c;
}

model::model(const gguf_file& f) : cfg_(model_config::from_gguf(f)) {
  const auto& c = cfg_;
  const int q_dim = c.n_head * c.head_dim, kv_dim = c.n_kv_head * c.head_dim;
  tok_embd_ = load_matrix(f, "token_embd.weight", c.n_vocab, c.n_embd);
  tied_ = !f.has_tensor("output.weight");
  if (!tied_) output_ = load_matrix(f, "output.weight", c.n_vocab, c.n_embd);
  out_norm_ = load_vector(f, "output_norm.weight", c.n_embd);
  layers_.resize(static_cast<size_t>(c.n_layer));
  for (int l = 0; l < c.n_layer; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    auto& L = layers_[static_cast<size_t>(l)];
    L.attn_norm = load_vector(f, p + "attn_norm.weight", c.n_embd);
    L.ffn_norm = load_vector(f, p + "ffn_norm.weight", c.n_embd);
    matrix wq = load_matrix(f, p + "attn_q.weight", q_dim, c.n_embd);
    matrix wk = load_matrix(f, p + "attn_k.weight", kv_dim, c.n_embd);
    unpermute_heads(wq, c.n_head);
    unpermute_heads(wk, c.n_kv_head);
    // Every tensor is loaded (and may throw) before a comma initialiser sees it: an exception
    // inside Eigen's comma initialiser fails its destructor's assertion and aborts.
    const matrix wv = load_matrix(f, p + "attn_v.weight", kv_dim, c.n_embd);
    L.wqkv.resize(q_dim + 2 * kv_dim, c.n_embd);
    L.wqkv << wq, wk, wv;
    L.wo = load_matrix(f, p + "attn_output.weight", c.n_embd, q_dim);
    const matrix w_gate = load_matrix(f, p + "ffn_gate.weight", c.n_ff, c.n_embd);
    const matrix w_up = load_matrix(f, p + "ffn_up.weight", c.n_ff, c.n_embd);
    L.w_gate_up.resize(2 * static_cast<Eigen::Index>(c.n_ff), c.n_embd);
    L.w_gate_up << w_gate, w_up;
    L.w_down = load_matrix(f, p + "ffn_down.weight", c.n_embd, c.n_ff);
  }
  inv_freq_.resize(static_cast<size_t>(c.head_dim / 2));
  for (size_t i = 0; i < inv_freq_.size(); ++i)
    inv_freq_[i] = std::pow(c.rope_base, -2.0 * static_cast<double>(i) / c.head_dim);
}

void model::check_token(int32_t t) const {
  if (t < 0 || t >= cfg_.n_vocab)
    throw std::invalid_argument("token id " + std::to_string(t) + " outside the vocabulary [0, " +
                                std::to_string(cfg_.n_vocab) + ")");
}

void model::rope(float* x, int n_heads, int64_t pos) const {
  const int half = cfg_.head_dim / 2;
  std::vector<float> cs(static_cast<size_t>(2 * half));
  rope_tables(inv_freq_, pos, cs.data(), cs.data() + half);
  for (int h = 0; h < n_heads; ++h) rotate(x + h * cfg_.head_dim, cs.data(), cs.data() + half, half);
}

prefill_result model::prefill(const std::vector<int32_t>& tokens, kv_store& cache, const prefill_hook& hook,
                              int window) const {
  const auto& c = cfg_;
  const auto t_start = clock_type::now();
  const auto n = static_cast<int64_t>(tokens.size());
  if (n == 0) throw std::invalid_argument("prefill: empty prompt (need at least 1 token)");
  if (n > c.n_ctx)
    throw std::invalid_argument("prefill: prompt of " + std::to_string(n) + " tokens exceeds the model context of " +
                                std::to_string(c.n_ctx) + " tokens");
  for (int32_t t : tokens) check_token(t);
  if (hook && (window < 1 || window > n))
    throw std::invalid_argument("prefill: window " + std::to_string(window) + " outside [1, " + std::to_string(n) +
                                "] (the prompt length)");

  const int hd = c.head_dim, half = hd / 2;
  const auto eps = static_cast<float>(c.rms_eps);
  prefill_result res;
  cache.reset(c.n_layer, c.n_kv_head, hd);
  try {
    // RoPE angles of every position, computed once in double like decode's.
    std::vector<float> cos_t(static_cast<size_t>(n * half)), sin_t(cos_t.size());
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < n; ++p) rope_tables(inv_freq_, p, cos_t.data() + p * half, sin_t.data() + p * half);

    matrix x(n, c.n_embd);
    for (int64_t i = 0; i < n; ++i) x.row(i) = tok_embd_.row(tokens[static_cast<size_t>(i)]);

    const int64_t q_dim = static_cast<int64_t>(c.n_head) * hd, kv_dim = static_cast<int64_t>(c.n_kv_head) * hd;
    matrix h, qkv, attn, gate_up;
    for (int l = 0; l < c.n_layer; ++l) {
      const auto& L = layers_[static_cast<size_t>(l)];
      rms_norm_rows(x, 0, n, L.attn_norm, eps, h);
      qkv.noalias() = h * L.wqkv.transpose();
      // Queries before RoPE, for a hook that asks for them (expected attention).
      matrix pre_rope_q;
      if (hook && hook.wants_prompt_queries()) pre_rope_q = qkv.leftCols(q_dim);
      // RoPE on Q in place; K (rotated) and V are copied into per-head [kv_head][n][hd] buffers,
      // the layout the hook and the store use.
      std::vector<float> k(static_cast<size_t>(kv_dim * n)), v(k.size());
#pragma omp parallel for schedule(static)
      for (int64_t p = 0; p < n; ++p) {
        const float *cp = cos_t.data() + p * half, *sp = sin_t.data() + p * half;
        float* row = qkv.data() + p * qkv.cols();
        for (int hh = 0; hh < c.n_head; ++hh) rotate(row + hh * hd, cp, sp, half);
        for (int g = 0; g < c.n_kv_head; ++g) {
          float* kr = k.data() + (g * n + p) * hd;
          std::copy_n(row + q_dim + g * hd, hd, kr);
          std::copy_n(row + q_dim + kv_dim + g * hd, hd, v.data() + (g * n + p) * hd);
          rotate(kr, cp, sp, half);
        }
      }
      const strided_map q(qkv.data(), n, q_dim, Eigen::OuterStride<>(qkv.cols()));

      std::vector<float> attention_sums;
      if (hook && hook.wants_attention_sums()) attention_sums.assign(static_cast<size_t>(c.n_head * n), 0.0f);
      causal_attention(q, k.data(), v.data(), c, attn, attention_sums.empty() ? nullptr : attention_sums.data());

      std::vector<int64_t> keep(static_cast<size_t>(c.n_kv_head), n);
      if (hook) {
        std::vector<float> q_window(static_cast<size_t>(q_dim) * static_cast<size_t>(window));
        for (int hh = 0; hh < c.n_head; ++hh)
          row_map(q_window.data() + static_cast<int64_t>(hh) * window * hd, window, hd) =
              q.block(n - window, static_cast<int64_t>(hh) * hd, window, hd);
        const auto t_hook = clock_type::now();
        layer_extras extras;
        extras.attention_sums = attention_sums.empty() ? nullptr : attention_sums.data();
        extras.prompt_queries = pre_rope_q.size() ? pre_rope_q.data() : nullptr;
        extras.q_stride = q_dim;
        extras.wo = L.wo.data();
        extras.wo_rows = L.wo.rows();
        extras.inv_freq = inv_freq_.data();
        keep = hook(l, k.data(), v.data(), q_window.data(), n, window, extras);
        res.hook_seconds += seconds_since(t_hook);
        if (keep.size() != static_cast<size_t>(c.n_kv_head))
          throw std::invalid_argument("prefill: hook returned " + std::to_string(keep.size()) + " lengths for layer " +
                                      std::to_string(l) + ", expected " + std::to_string(c.n_kv_head) + " (one per KV head)");
        for (int g = 0; g < c.n_kv_head; ++g)
          if (keep[static_cast<size_t>(g)] < 0 || keep[static_cast<size_t>(g)] > n)
            throw std::invalid_argument("prefill: hook kept " + std::to_string(keep[static_cast<size_t>(g)]) +
                                        " rows of layer " + std::to_string(l) + " KV head " + std::to_string(g) +
                                        ", outside [0, " + std::to_string(n) + "]");
      }
      for (int g = 0; g < c.n_kv_head; ++g)
        cache.assign(l, g, k.data() + g * n * hd, v.data() + g * n * hd, keep[static_cast<size_t>(g)]);
      std::vector<float>().swap(k);  // free the full-length K/V before the next layer
      std::vector<float>().swap(v);

      x.noalias() += attn * L.wo.transpose();

      // The MLP runs over row chunks to bound its [rows][2 n_ff] temporary.
      constexpr int64_t chunk = 1024;
      for (int64_t r0 = 0; r0 < n; r0 += chunk) {
        const int64_t rows = std::min(chunk, n - r0);
        rms_norm_rows(x, r0, rows, L.ffn_norm, eps, h);
        gate_up.noalias() = h * L.w_gate_up.transpose();
        silu_mul(gate_up, c.n_ff);
        x.middleRows(r0, rows).noalias() += gate_up.leftCols(c.n_ff) * L.w_down.transpose();
      }
    }

    vec last(c.n_embd);
    rms_norm(x.row(n - 1).data(), out_norm_, eps, last.data());
    res.logits.resize(static_cast<size_t>(c.n_vocab));
    matvec(lm_head(), last.data(), res.logits.data());
  } catch (...) {
    cache.clear();
    throw;
  }
  cache.set_n_past(n);
  res.seconds = seconds_since(t_start);
  return res;
}

std::vector<float> model::decode_step(int32_t token, kv_store& cache, const decode_observer& observe) const {
  const auto& c = cfg_;
  check_token(token);
  if (cache.n_layer() != c.n_layer || cache.n_kv_head() != c.n_kv_head || cache.head_dim() != c.head_dim)
    throw std::invalid_argument("decode_step: the cache's shape does not match the model (run prefill first)");
  const int64_t pos = cache.n_past();
  if (pos >= c.n_ctx)
    throw std::invalid_argument("decode_step: position " + std::to_string(pos) + " is past the model context of " +
                                std::to_string(c.n_ctx) + " tokens");
  const int hd = c.head_dim, q_dim = c.n_head * hd, kv_dim = c.n_kv_head * hd;
  const auto eps = static_cast<float>(c.rms_eps);

  vec x = tok_embd_.row(token).transpose();
  vec h(c.n_embd), qkv(q_dim + 2 * kv_dim), attn(q_dim), tmp(c.n_embd), gate_up(2 * c.n_ff);
  float *q = qkv.data(), *k = q + q_dim, *v = k + kv_dim;
  // Each KV head is its own allocation of [token][head_dim] rows: a ragged view for kvtrim's
  // decode attention (all G query heads of a KV head from one read of its rows).
  kvtrim::ragged_kv<float> rag;
  rag.keys.resize(static_cast<size_t>(c.n_kv_head));
  rag.values.resize(rag.keys.size());
  rag.lengths.resize(rag.keys.size());
  rag.row_stride = hd;
  rag.head_dim = hd;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  for (int l = 0; l < c.n_layer; ++l) {
    const auto& L = layers_[static_cast<size_t>(l)];
    rms_norm(x.data(), L.attn_norm, eps, h.data());
    matvec(L.wqkv, h.data(), qkv.data());
    rope(q, c.n_head, pos);
    rope(k, c.n_kv_head, pos);
    for (int g = 0; g < c.n_kv_head; ++g) {
      cache.append(l, g, k + g * hd, v + g * hd);
      rag.keys[static_cast<size_t>(g)] = cache.k(l, g);
      rag.values[static_cast<size_t>(g)] = cache.v(l, g);
      rag.lengths[static_cast<size_t>(g)] = cache.length(l, g);
    }
    kvtrim::ragged_decode_attention(q, rag, c.group(), scale, attn.data());
    if (observe) observe(l, q, cache, attn.data());
    matvec(L.wo, attn.data(), tmp.data());
    x += tmp;

    rms_norm(x.data(), L.ffn_norm, eps, h.data());
    matvec(L.w_gate_up, h.data(), gate_up.data());
    silu_mul(gate_up.transpose(), c.n_ff);
    matvec(L.w_down, gate_up.data(), tmp.data());
    x += tmp;
  }
  rms_norm(x.data(), out_norm_, eps, h.data());
  std::vector<float> logits(static_cast<size_t>(c.n_vocab));
  matvec(lm_head(), h.data(), logits.data());
  cache.set_n_past(pos + 1);
  return logits;
}

void model::project_attention_output(int layer, const float* attn, float* out) const {
  if (layer < 0 || layer >= cfg_.n_layer)
    throw std::invalid_argument("project_attention_output: layer " + std::to_string(layer) + " outside [0, " +
                                std::to_string(cfg_.n_layer) + ")");
  matvec(layers_[static_cast<size_t>(layer)].wo, attn, out);
}

decode_result model::decode_greedy(kv_store& cache, const std::vector<float>& first_logits, int max_new_tokens,
                                   const std::vector<int32_t>& stop_tokens, const decode_observer& observe,
                                   const std::function<void(int32_t)>& on_step) const {
  if (max_new_tokens < 0)
    throw std::invalid_argument("decode_greedy: max_new_tokens " + std::to_string(max_new_tokens) + " is negative");
  decode_result r;
  if (max_new_tokens == 0) return r;
  const auto t0 = clock_type::now();
  int32_t next = argmax(first_logits);
  for (;;) {
    if (std::find(stop_tokens.begin(), stop_tokens.end(), next) != stop_tokens.end()) {
      r.stopped = true;
      break;
    }
    r.tokens.push_back(next);
    if (static_cast<int>(r.tokens.size()) >= max_new_tokens || cache.n_past() >= cfg_.n_ctx) break;
    next = argmax(decode_step(next, cache, observe));
    ++r.steps;
    if (on_step) on_step(next);
  }
  r.seconds = seconds_since(t0);
  return r;
}

generate_result model::generate(const std::vector<int32_t>& prompt, kv_store& cache, int max_new_tokens,
                                const std::vector<int32_t>& stop_tokens, const prefill_hook& hook, int window,
                                const decode_observer& observe) const {
  if (max_new_tokens < 0)
    throw std::invalid_argument("generate: max_new_tokens " + std::to_string(max_new_tokens) + " is negative");
  generate_result r;
  r.prefill = prefill(prompt, cache, hook, window);
  decode_result d = decode_greedy(cache, r.prefill.logits, max_new_tokens, stop_tokens, observe);
  r.tokens = std::move(d.tokens);
  r.stopped = d.stopped;
  r.decode_steps = d.steps;
  r.decode_seconds = d.seconds;
  if (r.decode_steps > 0) r.decode_tokens_per_second = static_cast<double>(r.decode_steps) / r.decode_seconds;
  return r;
}

std::vector<int32_t> default_stop_tokens(const gguf_file& f) {
  std::vector<int32_t> out;
  if (f.has("tokenizer.ggml.eos_token_id")) out.push_back(static_cast<int32_t>(f.get_uint("tokenizer.ggml.eos_token_id")));
  if (f.has("tokenizer.ggml.tokens")) {
    const auto vocab = f.get_string_array("tokenizer.ggml.tokens");
    for (const char* s : {"<|im_end|>", "<|endoftext|>"}) {
      const auto it = std::find(vocab.begin(), vocab.end(), s);
      const auto id = static_cast<int32_t>(it - vocab.begin());
      if (it != vocab.end() && std::find(out.begin(), out.end(), id) == out.end()) out.push_back(id);
    }
  }
  return out;
}

namespace {

size_t proc_status_kb(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const std::string prefix = std::string(field) + ":";
  while (std::getline(in, line))
    if (line.compare(0, prefix.size(), prefix) == 0) return std::stoull(line.substr(prefix.size())) * 1024;
  return 0;
}

}  // namespace

size_t peak_rss_bytes() { return proc_status_kb("VmHWM"); }
size_t current_rss_bytes() { return proc_status_kb("VmRSS"); }

std::string default_model_path() {
  if (const char* p = std::getenv("KVTRIM_MODEL"); p && *p) return p;
  const char* home = std::getenv("HOME");
  return std::string(home ? home : "") + "/.cache/kvtrim/SmolLM2-135M-Instruct.Q4_1.gguf";
}

}  // namespace kvhost
