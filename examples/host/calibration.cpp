#include "host/calibration.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <functional>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <stdexcept>

#include "common/log_file.hpp"
#include "host/compression.hpp"
#include "host/haystack.hpp"
#include "kvtrim/attention/ragged_decode.hpp"
#include "kvtrim/calibrate/layer_eviction_error.hpp"
#include "kvtrim/calibrate/retrieval_reasoning_score.hpp"
#include "kvtrim/calibrate/semantic_retrieval_score.hpp"
#include "kvtrim/compose/method.hpp"

namespace kvhost {

namespace fs = std::filesystem;
namespace kj = kvtrim::json;
using clock_type = std::chrono::steady_clock;

// ---------------------------------------------------------------------------------------------
// SHA-256 (FIPS 180-4), for the profile's provenance.

namespace {

struct sha256 {
  std::array<uint32_t, 8> h{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                            0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  unsigned char buf[64];
  size_t fill = 0;
  uint64_t bytes = 0;

  static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }
  void block(const unsigned char* p) {
    static const uint32_t k[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
    uint32_t w[64];
    for (int i = 0; i < 16; ++i)
      w[i] = uint32_t(p[4 * i]) << 24 | uint32_t(p[4 * i + 1]) << 16 | uint32_t(p[4 * i + 2]) << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; ++i) {
      const uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; ++i) {
      const uint32_t t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
      const uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      hh = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
  }
  void update(const unsigned char* p, size_t n) {
    bytes += n;
    while (n > 0) {
      const size_t take = std::min(n, size_t(64) - fill);
      std::copy(p, p + take, buf + fill);
      fill += take;
      p += take;
      n -= take;
      if (fill == 64) {
        block(buf);
        fill = 0;
      }
    }
  }
  std::string hex() {
    const uint64_t bits = bytes * 8;
    const unsigned char one = 0x80, zero = 0;
    update(&one, 1);
    while (fill != 56) update(&zero, 1);
    unsigned char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(bits >> (56 - 8 * i));
    update(len, 8);
    std::string out;
    char tmp[9];
    for (uint32_t x : h) {
      std::snprintf(tmp, sizeof tmp, "%08x", x);
      out += tmp;
    }
    return out;
  }
};

}  // namespace

std::string sha256_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path + " to hash it");
  sha256 s;
  std::vector<char> chunk(1 << 20);
  while (in) {
    in.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    s.update(reinterpret_cast<const unsigned char*>(chunk.data()), static_cast<size_t>(in.gcount()));
  }
  return s.hex();
}

// ---------------------------------------------------------------------------------------------
// Needles and data.

const std::vector<probe_needle>& retrieval_needles() {
  static const std::vector<probe_needle> n = {
      {"lemon-cake",
       "The secret ingredient in Grandma Odile's lemon cake is a spoonful of lavender honey.",
       "What is the secret ingredient in Grandma Odile's lemon cake?", "a spoonful of lavender honey",
       "The secret ingredient in Grandma Odile's lemon cake is"},
      {"observatory",
       "The password for the Kestrel Valley observatory is copper violin seventeen.",
       "What is the password for the Kestrel Valley observatory?", "copper violin seventeen",
       "The password for the Kestrel Valley observatory is"},
      {"lighthouse",
       "The lighthouse keeper on Marrow Island paints every door bright orange to keep the winter fog away.",
       "What does the lighthouse keeper on Marrow Island do to every door?",
       "paints every door bright orange", "The lighthouse keeper on Marrow Island"},
      {"horse",
       "The best way to calm a nervous horse is to hum a slow lullaby and offer it a green apple.",
       "What is the best way to calm a nervous horse?", "hum a slow lullaby and offer it a green apple",
       "The best way to calm a nervous horse is to"},
  };
  return n;
}

const std::vector<probe_needle>& reasoning_needles() {
  static const std::vector<probe_needle> n = {
      {"collectors",
       "Oren Castellane is 72 years old and collects antique maps. Priya Lindqvist is 35 years old "
       "and collects vintage cameras.",
       "Who is older, Oren Castellane or Priya Lindqvist, and what does that person collect?",
       "Oren Castellane collects antique maps", "The older person is"},
      {"bridges",
       "The Hallberg bridge is 340 metres long and is painted green. The Osterley bridge is 910 metres "
       "long and is painted red.",
       "Which bridge is longer, the Hallberg bridge or the Osterley bridge, and what colour is it painted?",
       "The Osterley bridge is painted red", "The longer bridge is"},
      {"captains",
       "Captain Ilse Moreau has sailed for 12 years and her ship is called the Gannet. Captain Dario "
       "Pike has sailed for 31 years and his ship is called the Heron.",
       "Which captain has sailed longer, and what is that captain's ship called?",
       "Captain Dario Pike ship Heron", "The captain who has sailed longer is"},
  };
  return n;
}

const std::vector<std::string>& calibration_datasets() {
  static const std::vector<std::string> d = {"gov_report_summ", "patent_summ", "news_summ", "financial_qa"};
  return d;
}

std::string default_calibration_data_dir() {
#ifdef KVTRIM_SOURCE_DIR
  return std::string(KVTRIM_SOURCE_DIR) + "/../shared/data";
#else
  return "../shared/data";
#endif
}


double word_f1(const std::string& candidate, const std::string& reference) {
  const auto c = words(candidate), r = words(reference);
  if (c.empty() || r.empty()) return 0.0;
  std::map<std::string, int> rc;
  for (const auto& w : r) ++rc[w];
  int common = 0;
  for (const auto& w : c) {
    auto it = rc.find(w);
    if (it != rc.end() && it->second > 0) {
      --it->second;
      ++common;
    }
  }
  if (common == 0) return 0.0;
  const double p = double(common) / double(c.size()), rr = double(common) / double(r.size());
  return 2 * p * rr / (p + rr);
}

namespace {

struct doc {
  std::string dataset;
  std::string input;
  std::vector<std::string> instructions;
};

// The calibration files, every record, in file order per dataset.
std::vector<doc> load_docs(const std::string& dir, std::vector<std::string>& files) {
  std::vector<doc> out;
  for (const auto& name : calibration_datasets()) {
    const std::string path = dir + "/leval/" + name + ".jsonl";
    std::ifstream in(path);
    if (!in)
      throw std::runtime_error("calibration data " + path + " not found (pass --data-dir, the folder holding leval/)");
    files.push_back(path);
    std::string line;
    int row = 0;
    while (std::getline(in, line)) {
      ++row;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const std::exception& e) {
        throw std::runtime_error(path + ":" + std::to_string(row) + ": " + e.what());
      }
      doc d;
      d.dataset = name;
      d.input = j.at("input").get<std::string>();
      for (const auto& s : j.at("instructions")) d.instructions.push_back(s.get<std::string>());
      out.push_back(std::move(d));
    }
  }
  return out;
}

std::string format_seconds(double s) {
  char b[32];
  if (s < 90) std::snprintf(b, sizeof b, "%.0fs", s);
  else if (s < 5400) std::snprintf(b, sizeof b, "%.0fm%02.0fs", std::floor(s / 60), std::fmod(s, 60.0));
  else std::snprintf(b, sizeof b, "%.0fh%02.0fm", std::floor(s / 3600), std::floor(std::fmod(s, 3600.0) / 60));
  return b;
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char b[32];
  std::strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return b;
}

// FNV-1a, for short fingerprints in trial keys.
std::string fnv_hex(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  char b[17];
  std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(h));
  return b;
}

// One probe prompt, tokenised piecewise so the needle's token span is known exactly.
struct probe_prompt {
  std::vector<int32_t> tokens;
  int64_t span_begin = 0, span_end = 0;
};

// The per-trial / per-sample record of the resume files.
struct record {
  std::string key;
  bool kept = false;
  double seconds = 0;
  std::string output;
  double quality = 0;  // ROUGE-1 recall, F1 (needle stages)
  kj::value state;     // the accumulator's to_json()
  kj::value extra;     // stage "heads": span_mass, copy_score trial sums
};

kj::value to_json(const record& r) {
  kj::value v;
  v.set("key", r.key);
  v.set("kept", r.kept);
  v.set("seconds", r.seconds);
  v.set("output", r.output);
  v.set("quality", r.quality);
  v.set("state", r.state);
  if (!r.extra.is_null()) v.set("extra", r.extra);
  return v;
}

record from_json(const kj::value& v) {
  kvtrim::detail::require(v.is_object(), "a record must be a JSON object");
  record r;
  r.key = v.at("key").as_string();
  r.kept = v.at("kept").as_bool();
  r.seconds = v.at("seconds").as_number();
  r.output = v.at("output").as_string();
  r.quality = v.at("quality").as_number();
  r.state = v.at("state");
  if (const kj::value* e = v.find("extra")) r.extra = *e;
  return r;
}

// Append-only per-stage log of finished trials. A torn line (a crash mid-write) is ignored and a
// torn last line cut off before the next append; a JSON line that is not a trial record is an
// error naming the file and line.
class trial_log {
 public:
  trial_log(const std::string& dir, const std::string& stage) {
    if (dir.empty()) return;
    path_ = dir + "/" + stage + ".jsonl";
    std::ifstream in(path_, std::ios::binary);
    std::string line;
    int64_t lineno = 0;
    while (std::getline(in, line)) {
      ++lineno;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      kj::value v;
      try {
        v = kj::parse(line, path_);
      } catch (const std::exception&) {
        continue;  // an incomplete line from an interrupted write: that trial runs again
      }
      try {
        record r = from_json(v);
        done_[r.key] = std::move(r);
      } catch (const std::exception& e) {
        throw std::runtime_error(path_ + ":" + std::to_string(lineno) + ": not a calibration trial record (" +
                                 kvtrim::detail::strip_prefix(e.what()) + "); move the file away to rerun its trials");
      }
    }
    in.close();
    truncate_torn_tail(path_);
  }
  const record* find(const std::string& key) const {
    auto it = done_.find(key);
    return it == done_.end() ? nullptr : &it->second;
  }
  void add(const record& r) {
    done_[r.key] = r;
    if (path_.empty()) return;
    std::ofstream out(path_, std::ios::app | std::ios::binary);
    out << kj::dump(to_json(r)) << "\n";
    out.flush();
    if (!out) throw std::runtime_error("cannot append to " + path_);
  }

 private:
  std::string path_;
  std::map<std::string, record> done_;
};

struct progress {
  std::string stage;
  int64_t total = 0, index = 0;
  double units_total = 0, units_done = 0;  // work units: prompt tokens + a decode allowance
  double run_units = 0, run_seconds = 0;   // of the trials run in this call (the ETA's rate)
  bool on = true;
  void report(const std::string& what, double units, double secs, bool reused) {
    ++index;
    units_done += units;
    if (!reused) {
      run_units += units;
      run_seconds += secs;
    }
    if (!on) return;
    const double eta = run_units > 0 ? run_seconds / run_units * (units_total - units_done) : 0.0;
    std::fprintf(stderr, "[%s %lld/%lld] %s%s  %.1fs  ETA %s\n", stage.c_str(), static_cast<long long>(index),
                 static_cast<long long>(total), what.c_str(), reused ? " (from resume dir)" : "", secs,
                 format_seconds(eta).c_str());
  }
};

class calibrator {
 public:
  calibrator(const model& m, const tokenizer& tok, const std::vector<int32_t>& stops, const calibration_options& o)
      : m_(m), tok_(tok), stops_(stops), opt_(o), cfg_(m.config()) {
    data_dir_ = opt_.data_dir.empty() ? default_calibration_data_dir() : opt_.data_dir;
    docs_ = load_docs(data_dir_, files_);
    if (docs_.empty()) throw std::runtime_error("no calibration records in " + data_dir_ + "/leval");
    // The haystack order: every record, shuffled by the seed.
    order_.resize(docs_.size());
    for (size_t i = 0; i < order_.size(); ++i) order_[i] = i;
    std::mt19937_64 rng(opt_.seed);
    for (size_t i = order_.size(); i > 1; --i) std::swap(order_[i - 1], order_[static_cast<size_t>(rng() % i)]);
  }

  const std::vector<std::string>& files() const { return files_; }
  const std::string& data_dir() const { return data_dir_; }
  int64_t trials_run = 0;

  bool budget_left() const { return opt_.max_trials < 0 || trials_run < opt_.max_trials; }

  // Haystack tokens starting at record `start` of the shuffled order, at least n of them.
  std::vector<int32_t> haystack(size_t start, int64_t n) {
    std::vector<int32_t> out;
    const std::vector<int> sep = tok_.encode("\n\n", false);
    for (size_t i = 0; static_cast<int64_t>(out.size()) < n; ++i) {
      if (i >= order_.size()) throw std::runtime_error("calibration haystack too short for " + std::to_string(n) + " tokens");
      const size_t d = order_[(start + i) % order_.size()];
      auto it = doc_tokens_.find(d);
      if (it == doc_tokens_.end()) {
        const std::vector<int> t = tok_.encode(docs_[d].input, false);
        it = doc_tokens_.emplace(d, std::vector<int32_t>(t.begin(), t.end())).first;
      }
      if (!out.empty()) out.insert(out.end(), sep.begin(), sep.end());
      out.insert(out.end(), it->second.begin(), it->second.end());
    }
    out.resize(static_cast<size_t>(n));
    return out;
  }

  bool ends_sentence(int32_t t) const {
    const std::string s = tok_.decode({t});
    if (s.empty()) return false;
    const char c = s.back();
    return c == '.' || c == '!' || c == '?' || c == '\n';
  }

  // "context + question": ChatML, the needle at `depth` of the document moved back to a
  // sentence end, the assistant's turn primed with the needle's answer prefix.
  probe_prompt needle_prompt(const probe_needle& nd, int64_t target, double depth, size_t start) {
    const std::string marker = "\x01DOC\x01";
    const std::string user = "Read the document and answer the question.\n\n<document>\n" + marker +
                             "\n</document>\n\nQuestion: " + nd.question + " Answer in one sentence.";
    const std::string text = tok_.apply_chat_template({{"user", user}}, true) + nd.answer_prefix;
    const size_t at = text.find(marker);
    const std::vector<int> head = tok_.encode(text.substr(0, at), true);
    const std::vector<int> tail = tok_.encode(text.substr(at + marker.size()), true);
    const std::vector<int> fact_sp = tok_.encode(" " + nd.fact, false), fact_nl = tok_.encode(nd.fact, false);
    const int64_t overhead = static_cast<int64_t>(head.size() + tail.size() + fact_sp.size());
    if (target < overhead + 32)
      throw std::invalid_argument("calibration length " + std::to_string(target) + " is too short for needle '" +
                                  nd.name + "' (its question and fact take " + std::to_string(overhead) + " tokens)");
    if (target > cfg_.n_ctx - opt_.max_new_tokens)
      throw std::invalid_argument("calibration length " + std::to_string(target) + " + " +
                                  std::to_string(opt_.max_new_tokens) + " new tokens exceeds the model context of " +
                                  std::to_string(cfg_.n_ctx));
    const std::vector<int32_t> hay = haystack(start, target - overhead);
    const int64_t m = static_cast<int64_t>(hay.size());
    int64_t p = depth >= 1.0 ? m : static_cast<int64_t>(depth * static_cast<double>(m));
    while (p > 0 && p < m && !ends_sentence(hay[static_cast<size_t>(p - 1)])) --p;
    const bool newline = p == 0 || tok_.decode({hay[static_cast<size_t>(p - 1)]}).back() == '\n';
    const std::vector<int>& fact = newline ? fact_nl : fact_sp;
    probe_prompt out;
    out.tokens.assign(head.begin(), head.end());
    out.tokens.insert(out.tokens.end(), hay.begin(), hay.begin() + p);
    out.span_begin = static_cast<int64_t>(out.tokens.size());
    out.tokens.insert(out.tokens.end(), fact.begin(), fact.end());
    out.span_end = static_cast<int64_t>(out.tokens.size());
    out.tokens.insert(out.tokens.end(), hay.begin() + p, hay.end());
    out.tokens.insert(out.tokens.end(), tail.begin(), tail.end());
    return out;
  }

  // softmax(q·Kᵀ/√d) of every query head over this layer's rows (all KV heads hold the same
  // number with a full cache), into attn_ [n_head][n].
  int64_t attention_rows(int layer, const float* q, const kv_store& cache) {
    const int hd = cfg_.head_dim, G = cfg_.group();
    const int64_t n = cache.length(layer, 0);
    attn_.resize(static_cast<size_t>(cfg_.n_head * n));
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    for (int h = 0; h < cfg_.n_head; ++h) {
      const float* K = cache.k(layer, h / G);
      const float* qh = q + h * hd;
      float* row = attn_.data() + static_cast<int64_t>(h) * n;
      float mx = -INFINITY;
      for (int64_t t = 0; t < n; ++t) {
        float s = 0;
        const float* kt = K + t * hd;
        for (int i = 0; i < hd; ++i) s += qh[i] * kt[i];
        row[t] = s * scale;
        mx = std::max(mx, row[t]);
      }
      double sum = 0;
      for (int64_t t = 0; t < n; ++t) sum += (row[t] = std::exp(row[t] - mx));
      const float inv = static_cast<float>(1.0 / sum);
      for (int64_t t = 0; t < n; ++t) row[t] *= inv;
    }
    return n;
  }

  // One needle trial with the full cache: greedy decode, the observer feeding the accumulators.
  // `semantic` chooses the stage: true = heads (semantic score + comparisons), false = reasoning.
  record run_needle_trial(const std::string& key, const probe_needle& nd, const probe_prompt& pr, bool semantic) {
    const auto t0 = clock_type::now();
    const int L = cfg_.n_layer, H = cfg_.n_head;
    kvtrim::semantic_retrieval_score srh(L, H);
    kvtrim::retrieval_reasoning_score rr(L, H);
    std::vector<double> span_mass(static_cast<size_t>(L * H), 0.0), copy(static_cast<size_t>(L * H), 0.0);
    std::vector<int64_t> top(static_cast<size_t>(L * H), -1);
    if (semantic)
      srh.begin_trial(std::vector<int32_t>(pr.tokens.begin() + pr.span_begin, pr.tokens.begin() + pr.span_end),
                      pr.span_begin);
    else
      rr.begin_trial(pr.span_begin, pr.span_end);

    const decode_observer obs = [&](int layer, const float* q, const kv_store& cache, const float*) {
      const int64_t n = attention_rows(layer, q, cache);
      if (!semantic) {
        rr.on_step(layer, attn_.data(), n);
        return;
      }
      srh.observe(layer, attn_.data(), n);
      for (int h = 0; h < H; ++h) {
        const float* row = attn_.data() + static_cast<int64_t>(h) * n;
        double mass = 0;
        for (int64_t i = pr.span_begin; i < pr.span_end; ++i) mass += row[i];
        span_mass[static_cast<size_t>(layer * H + h)] += mass;
        top[static_cast<size_t>(layer * H + h)] = std::max_element(row, row + n) - row;
      }
    };

    // After each step the generated token decides which of the step's attention counted.
    std::function<void(int32_t)> score_step;
    if (semantic) score_step = [&](int32_t next) {
      srh.end_step(next);
      for (size_t i = 0; i < top.size(); ++i) {
        const int64_t t = top[i];
        if (t >= pr.span_begin && t < pr.span_end && pr.tokens[static_cast<size_t>(t)] == next) copy[i] += 1;
      }
    };
    kv_store cache;
    const prefill_result pre = m_.prefill(pr.tokens, cache);
    const std::vector<int32_t> gen =
        m_.decode_greedy(cache, pre.logits, opt_.max_new_tokens, stops_, obs, score_step).tokens;
    record r;
    r.key = key;
    r.output = tok_.decode(std::vector<int>(gen.begin(), gen.end()), true);
    if (semantic) {
      r.quality = rouge1_recall(r.output, nd.answer);
    } else {
      const std::string first_line = r.output.substr(0, r.output.find('\n'));
      r.quality = word_f1(first_line, nd.answer);
    }
    r.kept = r.quality > 0.5;
    if (semantic) {
      srh.end_trial(r.kept);
      r.state = srh.to_json();
      kj::value ex;
      auto mat = [&](const std::vector<double>& flat) {
        std::vector<std::vector<double>> m(static_cast<size_t>(L));
        for (int l = 0; l < L; ++l) m[size_t(l)].assign(flat.begin() + l * H, flat.begin() + (l + 1) * H);
        return kvtrim::detail::json_of(m);
      };
      ex.set("span_mass", mat(span_mass));
      ex.set("copy_score", mat(copy));
      r.extra = ex;
    } else {
      rr.end_trial(r.kept);
      r.state = rr.to_json();
    }
    r.seconds = std::chrono::duration<double>(clock_type::now() - t0).count();
    return r;
  }

  // One stage-"layers" sample: prefill with the full cache while a compresskv-uniform compressor
  // (semantic retrieval heads, budget compressed_tokens) only records which rows it would keep;
  // then at every decode step and layer, the attention output over those rows plus the tokens
  // decoded so far against the full cache's.
  record run_layer_sample(const std::string& key, const std::string& dataset, const std::vector<int32_t>& prompt,
                          const kvtrim::method& method) {
    const auto t0 = clock_type::now();
    const int L = cfg_.n_layer, hd = cfg_.head_dim, KV = cfg_.n_kv_head;
    const int64_t n = static_cast<int64_t>(prompt.size());
    kvtrim::layer_eviction_error lee(L, opt_.eps);
    lee.begin_sample(dataset);
    auto seq = method.begin(n);
    std::vector<std::vector<std::vector<kvtrim::index_t>>> keep(static_cast<size_t>(L));
    const prefill_hook hook = [&](int layer, float* k, float* v, const float* qw, int64_t len, int64_t w) {
      kvtrim::layer_kv<float> kv;
      kv.keys = kvtrim::view3<float>::head_major(k, KV, len, hd);
      kv.values = kvtrim::view3<float>::head_major(v, KV, len, hd);
      kv.queries = kvtrim::view3<const float>::head_major(qw, cfg_.n_head, w, hd);
      keep[static_cast<size_t>(layer)] = seq->select(layer, seq->score(layer, kv)).keep;
      return std::vector<int64_t>(static_cast<size_t>(KV), len);  // the cache itself stays full
    };
    std::vector<float> kc, vc, out(static_cast<size_t>(cfg_.n_head * hd));
    const decode_observer obs = [&](int layer, const float* q, const kv_store& cache, const float* attn_out) {
      const auto& kl = keep[static_cast<size_t>(layer)];
      int64_t rows = 0;
      std::vector<int64_t> off(static_cast<size_t>(KV) + 1, 0);
      for (int g = 0; g < KV; ++g) {
        rows += static_cast<int64_t>(kl[size_t(g)].size()) + cache.length(layer, g) - n;
        off[size_t(g) + 1] = rows;
      }
      kc.resize(static_cast<size_t>(rows * hd));
      vc.resize(kc.size());
      kvtrim::ragged_kv<float> rk;
      rk.row_stride = hd;
      rk.head_dim = hd;
      for (int g = 0; g < KV; ++g) {
        int64_t r = off[size_t(g)];
        auto copy_row = [&](int64_t t) {
          std::copy(cache.k(layer, g) + t * hd, cache.k(layer, g) + (t + 1) * hd, kc.begin() + r * hd);
          std::copy(cache.v(layer, g) + t * hd, cache.v(layer, g) + (t + 1) * hd, vc.begin() + r * hd);
          ++r;
        };
        for (kvtrim::index_t t : kl[size_t(g)]) copy_row(t);
        for (int64_t t = n; t < cache.length(layer, g); ++t) copy_row(t);
        rk.keys.push_back(kc.data() + off[size_t(g)] * hd);
        rk.values.push_back(vc.data() + off[size_t(g)] * hd);
        rk.lengths.push_back(off[size_t(g) + 1] - off[size_t(g)]);
      }
      kvtrim::ragged_decode_attention(q, rk, cfg_.group(), 1.0f / std::sqrt(static_cast<float>(hd)), out.data());
      lee.on_step(layer, attn_out, out.data(), static_cast<kvtrim::index_t>(out.size()));
    };
    kv_store cache;
    const std::vector<int32_t> gen =
        m_.generate(prompt, cache, opt_.layer_max_new_tokens, stops_, hook, opt_.window, obs).tokens;
    record r;
    r.key = key;
    r.output = tok_.decode(std::vector<int>(gen.begin(), gen.end()), true);
    r.kept = true;
    lee.end_sample(true);
    r.state = lee.to_json();
    r.seconds = std::chrono::duration<double>(clock_type::now() - t0).count();
    return r;
  }

  // A stage-"layers" prompt: the record's text cut to fit max_tokens, then its instruction.
  std::vector<int32_t> layer_prompt(const doc& d, size_t instruction) {
    const std::string marker = "\x01DOC\x01";
    const std::string user = "<document>\n" + marker + "\n</document>\n\n" + d.instructions[instruction];
    const std::string text = tok_.apply_chat_template({{"user", user}}, true);
    const size_t at = text.find(marker);
    const std::vector<int> head = tok_.encode(text.substr(0, at), true);
    const std::vector<int> tail = tok_.encode(text.substr(at + marker.size()), true);
    std::vector<int> body = tok_.encode(d.input, false);
    const int64_t room = opt_.layer_prompt_tokens - static_cast<int64_t>(head.size() + tail.size());
    if (room < 64)
      throw std::invalid_argument("--layer-prompt-tokens " + std::to_string(opt_.layer_prompt_tokens) +
                                  " leaves no room for the document");
    if (static_cast<int64_t>(body.size()) > room) body.resize(static_cast<size_t>(room));
    std::vector<int32_t> out(head.begin(), head.end());
    out.insert(out.end(), body.begin(), body.end());
    out.insert(out.end(), tail.begin(), tail.end());
    return out;
  }

  // The stage-"layers" prompts: per dataset, the first layer_prompts records of its seeded order
  // (financial_qa: one question each of its first records).
  std::vector<std::pair<std::string, std::vector<int32_t>>> layer_prompts() {
    std::vector<std::pair<std::string, std::vector<int32_t>>> out;
    for (const auto& ds : calibration_datasets()) {
      int taken = 0;
      for (size_t i = 0; i < order_.size() && taken < opt_.layer_prompts; ++i) {
        const doc& d = docs_[order_[i]];
        if (d.dataset != ds || d.instructions.empty()) continue;
        const size_t ins = static_cast<size_t>(opt_.seed + static_cast<uint64_t>(taken)) % d.instructions.size();
        out.emplace_back(ds, layer_prompt(d, ins));
        ++taken;
      }
    }
    return out;
  }

  std::vector<size_t> order_;

 private:
  const model& m_;
  const tokenizer& tok_;
  const std::vector<int32_t>& stops_;
  const calibration_options& opt_;
  const model_config& cfg_;
  std::string data_dir_;
  std::vector<std::string> files_;
  std::vector<doc> docs_;
  std::map<size_t, std::vector<int32_t>> doc_tokens_;
  std::vector<float> attn_;
};

std::vector<probe_needle> pick(const std::vector<probe_needle>& all, const std::vector<std::string>& names,
                               const char* what) {
  if (names.empty()) return all;
  std::vector<probe_needle> out;
  for (const auto& n : names) {
    auto it = std::find_if(all.begin(), all.end(), [&](const probe_needle& p) { return p.name == n; });
    if (it == all.end()) {
      std::string known;
      for (const auto& p : all) known += (known.empty() ? "" : ", ") + p.name;
      throw std::invalid_argument(std::string("unknown ") + what + " needle '" + n + "' (accepted: " + known + ")");
    }
    out.push_back(*it);
  }
  return out;
}

double depth_of(int i, int depths) { return depths == 1 ? 0.5 : static_cast<double>(i) / (depths - 1); }

std::string join_lengths(const std::vector<int64_t>& v) {
  std::string s;
  for (auto x : v) s += (s.empty() ? "" : ",") + std::to_string(x);
  return s;
}

// A stage's report, resume log and progress line. Trials found in the log are reused; the others
// run while max_trials allows and are appended to it.
struct stage_run {
  stage_report rep;
  trial_log log;
  progress pg;

  stage_run(const std::string& stage, const calibration_options& opt) : log(opt.resume_dir, stage) {
    rep.stage = stage;
    pg.stage = stage;
    pg.on = opt.progress;
  }

  // The trial's record, from the log or from run(); nullptr when max_trials is spent.
  // `legacy`: the key an older kvtrim gave the same trial (without what it now records), reused
  // when present.
  template <class Run>
  const record* trial(calibrator& cal, const std::string& key, bool& reused, Run run,
                      const std::string& legacy = "") {
    const record* r = log.find(key);
    if (!r && !legacy.empty()) r = log.find(legacy);
    reused = r != nullptr;
    if (reused) {
      ++rep.reused;
      return r;
    }
    if (!cal.budget_left()) return nullptr;
    log.add(run());
    ++cal.trials_run;
    ++rep.run;
    return log.find(key);
  }

  // Adds the trial's own time (reused ones too) and prints its progress line.
  void report(const record& r, const std::string& what, double units, bool reused) {
    rep.trial_seconds += r.seconds;
    pg.report(what, units, r.seconds, reused);
  }
};

// A needle stage's grid: needles x lengths x depths, run in that order.
struct needle_grid {
  const char* stage;  // "heads" or "reasoning": the trial keys' prefix
  const std::vector<probe_needle>& needles;
  const std::vector<int64_t>& lengths;
  int depths;
  size_t first_start, needle_step;  // haystack start: first_start + needle * needle_step + length * 3 + depth
  bool semantic;                    // run_needle_trial's stage: heads (true) or reasoning
  const char* score;                // the quality's name on the progress line
};

// Runs or reuses every trial of a needle stage, handing each record to `take`. False: stopped by
// max_trials. Keys and haystack starts must stay as they are: resume directories hold them.
template <class Take>
bool run_needle_stage(calibrator& cal, const calibration_options& opt, const needle_grid& g, stage_report& rep,
                      Take take) {
  stage_run st(g.stage, opt);
  struct plan {
    std::string key, legacy_key;
    size_t needle, start;
    int64_t len;
    int depth;
  };
  std::vector<plan> plans;
  const std::string seed_s = std::to_string(opt.seed);
  for (size_t ni = 0; ni < g.needles.size(); ++ni)
    for (size_t li = 0; li < g.lengths.size(); ++li)
      for (int di = 0; di < g.depths; ++di) {
        const std::string legacy = std::string(g.stage) + "|" + g.needles[ni].name + "|" +
                                   fnv_hex(g.needles[ni].fact) + "|len=" + std::to_string(g.lengths[li]) +
                                   "|depth=" + std::to_string(di) + "/" + std::to_string(g.depths) +
                                   "|new=" + std::to_string(opt.max_new_tokens) + "|seed=" + seed_s;
        // The haystack slice depends on the trial's place in --needles / --lengths: its start
        // is part of the key, so a reordered or extended list reruns the trials it moved.
        const size_t start = g.first_start + ni * g.needle_step + li * 3 + static_cast<size_t>(di);
        plans.push_back({legacy + "|start=" + std::to_string(start), legacy, ni, start, g.lengths[li], di});
        st.pg.units_total += static_cast<double>(g.lengths[li]) + 40.0 * opt.max_new_tokens;
      }
  st.pg.total = static_cast<int64_t>(plans.size());
  st.rep.planned = st.pg.total;
  bool complete = true;
  const auto t0 = clock_type::now();
  for (const plan& pl : plans) {
    const probe_needle& nd = g.needles[pl.needle];
    bool reused = false;
    const record* r = st.trial(cal, pl.key, reused, [&] {
      const probe_prompt pr = cal.needle_prompt(nd, pl.len, depth_of(pl.depth, g.depths), pl.start);
      return cal.run_needle_trial(pl.key, nd, pr, g.semantic);
    }, pl.legacy_key);
    if (!r) {
      complete = false;
      break;
    }
    take(*r);
    st.rep.kept += r->kept;
    char what[200];
    std::snprintf(what, sizeof what, "%s len=%lld depth=%.0f%%: %s (%s %.2f)", nd.name.c_str(),
                  static_cast<long long>(pl.len), 100 * depth_of(pl.depth, g.depths), r->kept ? "kept" : "discarded",
                  g.score, r->quality);
    st.report(*r, what, static_cast<double>(pl.len) + 40.0 * opt.max_new_tokens, reused);
  }
  st.rep.seconds = std::chrono::duration<double>(clock_type::now() - t0).count();
  rep = st.rep;
  return complete;
}

}  // namespace

calibration_result calibrate(const model& m, const tokenizer& tok, const std::vector<int32_t>& stop_tokens,
                             const model_identity& id, const calibration_options& opt) {
  const model_config& c = m.config();
  const kvtrim::model_shape shape = kvtrim_shape(c);
  auto has_stage = [&](const char* s) { return std::find(opt.stages.begin(), opt.stages.end(), s) != opt.stages.end(); };
  for (const auto& s : opt.stages)
    if (s != "heads" && s != "reasoning" && s != "layers")
      throw std::invalid_argument("unknown stage '" + s + "' (accepted: heads, reasoning, layers, all)");
  if (opt.stages.empty()) throw std::invalid_argument("no calibration stage chosen");
  if (opt.depths < 1 || opt.depths > 100) throw std::invalid_argument("--depths " + std::to_string(opt.depths) + " must be in [1, 100]");
  if (opt.max_new_tokens < 1 || opt.max_new_tokens > 4096)
    throw std::invalid_argument("--max-new-tokens " + std::to_string(opt.max_new_tokens) + " must be in [1, 4096]");
  if (opt.layer_max_new_tokens < 2)
    throw std::invalid_argument("--layer-max-new-tokens " + std::to_string(opt.layer_max_new_tokens) + " must be >= 2");
  if (opt.layer_prompts < 1) throw std::invalid_argument("--layer-prompts must be >= 1");
  if (opt.retrieval_heads_k < 1 || opt.retrieval_heads_k > c.n_head)
    throw std::invalid_argument("--retrieval-heads " + std::to_string(opt.retrieval_heads_k) + " must be in [1, " +
                                std::to_string(c.n_head) + "]");
  const bool has_base = !opt.base.model.empty() || opt.base.layers > 0;
  if (has_base) opt.base.check_matches(shape);
  const std::vector<probe_needle> rneedles = pick(retrieval_needles(), opt.needles, "retrieval");
  const std::vector<probe_needle> qneedles = pick(reasoning_needles(), opt.reasoning_needle_names, "reasoning");
  const std::vector<int64_t> qlengths = opt.reasoning_lengths.empty() ? opt.lengths : opt.reasoning_lengths;
  const int qdepths = opt.reasoning_depths > 0 ? opt.reasoning_depths : opt.depths;
  if ((has_stage("heads") || has_stage("reasoning")) && (opt.lengths.empty() || qlengths.empty()))
    throw std::invalid_argument("no calibration lengths given");
  for (const auto* ls : {&opt.lengths, &qlengths})
    for (int64_t len : *ls)
      if (len < 64 || len + opt.max_new_tokens > c.n_ctx)
        throw std::invalid_argument("calibration length " + std::to_string(len) + " outside [64, " +
                                    std::to_string(c.n_ctx - opt.max_new_tokens) + "] (the context " +
                                    std::to_string(c.n_ctx) + " less --max-new-tokens)");
  if (has_stage("layers") && !has_stage("heads") && !(has_base && opt.base.has_semantic_retrieval()))
    throw std::invalid_argument(
        "stage 'layers' needs semantic retrieval heads: run stage 'heads' too, or pass --profile with them");

  calibrator cal(m, tok, stop_tokens, opt);  // reads the data first: missing files fail before any write
  // The resume directory: created if needed, bound to one model file.
  std::string date = utc_now();
  if (!opt.resume_dir.empty()) {
    fs::create_directories(opt.resume_dir);
    const std::string run = opt.resume_dir + "/run.json";
    if (fs::exists(run)) {
      const kj::value v = kj::parse(kvtrim::read_text_file(run), run);
      const std::string sha = v.at("model_sha256").as_string();
      if (sha != id.sha256)
        throw std::runtime_error("resume directory " + opt.resume_dir + " belongs to a run on model sha256 " + sha +
                                 ", not " + id.sha256 + "; use another --resume-dir");
      date = v.at("date").as_string();
    } else {
      kj::value v;
      v.set("model_sha256", id.sha256);
      v.set("date", date);
      kvtrim::write_text_file_atomic(run, kj::dump(v, 2) + "\n");
    }
  }

  calibration_result res;
  res.complete = true;
  kvtrim::profile p;
  if (has_base) {
    p = opt.base;
  }
  p.model = id.name.empty() ? c.name : id.name;
  p.model_sha256 = id.sha256;
  p.layers = c.n_layer;
  p.q_heads = c.n_head;
  p.kv_heads = c.n_kv_head;
  const std::string seed_s = std::to_string(opt.seed);

  // ---- stage heads
  if (has_stage("heads")) {
    stage_report rep;
    kvtrim::semantic_retrieval_score total(c.n_layer, c.n_head);
    std::vector<std::vector<double>> span(size_t(c.n_layer), std::vector<double>(size_t(c.n_head), 0.0)), copy = span;
    const needle_grid grid{"heads", rneedles, opt.lengths, opt.depths, 0, 7, true, "ROUGE-1 recall"};
    res.complete = run_needle_stage(cal, opt, grid, rep, [&](const record& r) {
      total.merge(kvtrim::semantic_retrieval_score::from_json(r.state));
      if (!r.kept) return;
      const auto sm = kvtrim::detail::json_matrix(r.extra.at("span_mass"), "span_mass");
      const auto cp = kvtrim::detail::json_matrix(r.extra.at("copy_score"), "copy_score");
      for (size_t l = 0; l < span.size(); ++l)
        for (size_t h = 0; h < span[l].size(); ++h) {
          span[l][h] += sm.at(l).at(h);
          copy[l][h] += cp.at(l).at(h);
        }
    });
    if (res.complete) {
      if (rep.kept == 0)
        throw std::runtime_error("stage heads: no trial was kept (no answer reached ROUGE-1 recall > 0.5); "
                                 "try shorter --lengths");
      total.to_profile(p);
      for (auto& row : span)
        for (double& x : row) x /= static_cast<double>(rep.kept);
      for (auto& row : copy)
        for (double& x : row) x /= static_cast<double>(rep.kept);
      res.span_mass = span;
      res.copy_score = copy;
      std::string nd;
      for (const auto& n : rneedles) nd += (nd.empty() ? "" : " | ") + n.name + ": " + n.fact;
      p.provenance["semantic_retrieval_needles"] = nd;
      p.provenance["semantic_retrieval_settings"] =
          "lengths " + join_lengths(opt.lengths) + "; depths " + std::to_string(opt.depths) +
          " (0..100%, moved back to a sentence end); greedy, max_new_tokens " + std::to_string(opt.max_new_tokens) +
          "; keep: ROUGE-1 recall of the answer > 0.5; " + std::to_string(rep.planned) + " trials, " +
          std::to_string(rep.kept) + " kept; seed " + seed_s;
    }
    res.stages.push_back(rep);
  }

  // ---- stage reasoning
  if (has_stage("reasoning") && res.complete) {
    stage_report rep;
    kvtrim::retrieval_reasoning_score total(c.n_layer, c.n_head);
    const needle_grid grid{"reasoning", qneedles, qlengths, qdepths, 11, 5, false, "F1"};
    res.complete = run_needle_stage(cal, opt, grid, rep, [&](const record& r) {
      total.merge(kvtrim::retrieval_reasoning_score::from_json(r.state));
    });
    if (res.complete) {
      if (rep.kept == 0)
        throw std::runtime_error("stage reasoning: no trial was kept (no answer reached F1 > 0.5); try shorter lengths");
      total.to_profile(p);
      std::string nd;
      for (const auto& n : qneedles) nd += (nd.empty() ? "" : " | ") + n.name + ": " + n.fact + " Q: " + n.question;
      p.provenance["retrieval_reasoning_needles"] = nd;
      p.provenance["retrieval_reasoning_settings"] =
          "lengths " + join_lengths(qlengths) + "; depths " + std::to_string(qdepths) + "; greedy, max_new_tokens " +
          std::to_string(opt.max_new_tokens) + "; keep: answer F1 (first output line) > 0.5; score a_i/N; " +
          std::to_string(rep.planned) + " trials, " + std::to_string(rep.kept) + " kept; seed " + seed_s;
    }
    res.stages.push_back(rep);
  }

  // ---- stage layers
  if (has_stage("layers") && res.complete) {
    stage_run st("layers", opt);
    kvtrim::profile heads;
    heads.model = p.model;
    heads.layers = c.n_layer;
    heads.q_heads = c.n_head;
    heads.kv_heads = c.n_kv_head;
    heads.semantic_retrieval = p.semantic_retrieval;
    kvtrim::method_config mc;
    mc.name = "compresskv-uniform";
    mc.target = kvtrim::budget::tokens(opt.compressed_tokens);
    mc.window = opt.window;
    mc.retrieval_heads = opt.retrieval_heads_k;
    mc.prof = &heads;
    const kvtrim::method method = kvtrim::make_method(mc, shape);
    // The trial keys name the heads that choose the compressed rows, so other heads rerun them.
    const kvtrim::retrieval_heads sel(heads.semantic_retrieval, opt.retrieval_heads_k);
    std::string head_sets;
    for (int l = 0; l < c.n_layer; ++l)
      for (int h : sel.heads(l, shape)) head_sets += std::to_string(l) + ":" + std::to_string(h) + ",";
    const std::string settings = "heads=" + fnv_hex(head_sets) + "|B=" + std::to_string(opt.compressed_tokens) +
                                 "|w=" + std::to_string(opt.window) + "|max=" + std::to_string(opt.layer_prompt_tokens) +
                                 "|new=" + std::to_string(opt.layer_max_new_tokens) + "|seed=" + seed_s;
    const auto prompts = cal.layer_prompts();
    st.pg.total = static_cast<int64_t>(prompts.size());
    st.rep.planned = st.pg.total;
    for (const auto& [ds, toks] : prompts)
      st.pg.units_total += static_cast<double>(toks.size()) + 40.0 * opt.layer_max_new_tokens;
    kvtrim::layer_eviction_error total(c.n_layer, opt.eps);
    std::map<std::string, int> seen;
    const auto t0 = clock_type::now();
    for (const auto& prompt : prompts) {
      const auto& ds = prompt.first;  // not a structured binding: a lambda captures these (clang)
      const auto& toks = prompt.second;
      const std::string key = "layers|" + ds + "|" + std::to_string(seen[ds]++) + "|" + fnv_hex(std::string(
          reinterpret_cast<const char*>(toks.data()), toks.size() * sizeof(int32_t))) + "|" + settings;
      bool reused = false;
      const record* r = st.trial(cal, key, reused, [&] { return cal.run_layer_sample(key, ds, toks, method); });
      if (!r) {
        res.complete = false;
        break;
      }
      total.merge(kvtrim::layer_eviction_error::from_json(r->state));
      ++st.rep.kept;
      st.report(*r, ds + " prompt of " + std::to_string(toks.size()) + " tokens",
                static_cast<double>(toks.size()) + 40.0 * opt.layer_max_new_tokens, reused);
    }
    st.rep.seconds = std::chrono::duration<double>(clock_type::now() - t0).count();
    if (res.complete) {
      total.to_profile(p);
      p.provenance["layer_error_settings"] =
          "compressed cache: compresskv-uniform, " + std::to_string(opt.compressed_tokens) + " tokens per KV head, window " +
          std::to_string(opt.window) + ", top-" + std::to_string(opt.retrieval_heads_k) +
          " semantic retrieval heads per layer" + (has_stage("heads") ? "" : " (from the given --profile)") +
          "; outputs compared before o_proj; " + std::to_string(opt.layer_prompts) +
          " prompts per dataset cut to " + std::to_string(opt.layer_prompt_tokens) +
          " tokens; greedy, max_new_tokens " + std::to_string(opt.layer_max_new_tokens) + "; seed " + seed_s;
    }
    res.stages.push_back(st.rep);
  }

  if (!res.complete) return res;
  p.provenance["tool"] = calibration_tool_version;
  p.provenance["date"] = date;
  p.provenance["model_file"] = fs::path(id.path).filename().string() + " (sha256 " +
                               (id.sha256.empty() ? std::string("unknown") : id.sha256) + ")";
  std::string files;
  for (const auto& f : cal.files()) {
    std::error_code ec;
    const auto size = fs::file_size(f, ec);
    files += (files.empty() ? "" : "; ") + std::string("leval/") + fs::path(f).filename().string() + " (" +
             std::to_string(ec ? 0 : size) + " bytes, sha256 " + sha256_file(f) + ")";
  }
  p.provenance["data"] = files;
  p.validate();
  res.prof = std::move(p);
  return res;
}

}  // namespace kvhost
