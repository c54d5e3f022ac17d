// One file over 400 lines: the tokenizer's pimpl. Byte-level BPE, the PCRE2 pre-tokeniser, the
// special-token matcher and the ChatML template are members of one impl struct that keeps PCRE2
// out of tokenizer.hpp.
#include "engine/tokenizer.hpp"

#include "engine/gguf.hpp"
#include "kvtrim/core/utf8.hpp"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <mutex>
#include <queue>
#include <unordered_map>

namespace kvhost {
namespace {

// Unicode White_Space, spelled out: PCRE2's \s under UCP differs from it between versions
// (U+180E), and the oracle (Oniguruma in HF tokenizers) follows White_Space.
#define KVHOST_WS "\\t-\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
constexpr const char* gpt2_pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" KVHOST_WS "\\p{L}\\p{N}]+"
    "|[" KVHOST_WS "]+(?![^" KVHOST_WS "])|[" KVHOST_WS "]+";
#undef KVHOST_WS
constexpr const char* numeric_char_pattern = "\\p{N}";

// ChatML as SmolLM2 and Qwen2 ship it; the default system message sits between the two parts.
constexpr std::string_view chatml_body =
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
constexpr std::string_view chatml_loop = "{% for message in messages %}";
constexpr std::string_view chatml_default_open =
    "{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n";
constexpr std::string_view chatml_default_close = "<|im_end|>\n' }}{% endif %}";

// Length of the well-formed UTF-8 sequence at s[i], 0 if there is none. Strict enough that PCRE2
// can then skip its own check.
size_t utf8_sequence_length(std::string_view s, size_t i) {
  return kvtrim::utf8::sequence_length(reinterpret_cast<const unsigned char*>(s.data()) + i, s.size() - i);
}

uint32_t decode_utf8_at(std::string_view s, size_t i, size_t n) {
  const auto at = [&](size_t k) { return static_cast<uint32_t>(static_cast<unsigned char>(s[k])); };
  if (n == 1) return at(i);
  uint32_t cp = at(i) & (0xFFu >> (n + 1));
  for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (at(i + k) & 0x3F);
  return cp;
}

// GPT-2's reversible byte -> code point map: printable Latin-1 bytes stand for themselves, the
// rest are shifted to U+0100.. so that every token is printable text.
std::array<uint32_t, 256> byte_to_code_point() {
  std::array<uint32_t, 256> map{};
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
    map[b] = printable ? b : next++;
  }
  return map;
}

uint64_t pair_key(int left, int right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

struct code_deleter {
  void operator()(pcre2_code* c) const { pcre2_code_free(c); }
};
struct match_data_deleter {
  void operator()(pcre2_match_data* m) const { pcre2_match_data_free(m); }
};
using regex_ptr = std::unique_ptr<pcre2_code, code_deleter>;
using match_data_ptr = std::unique_ptr<pcre2_match_data, match_data_deleter>;

regex_ptr compile(const char* pattern) {
  int err = 0;
  PCRE2_SIZE err_offset = 0;
  regex_ptr code(pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern), PCRE2_ZERO_TERMINATED,
                               PCRE2_UTF | PCRE2_UCP, &err, &err_offset, nullptr));
  if (!code) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    throw tokenizer_error("pre-tokenizer regex does not compile at offset " +
                          std::to_string(err_offset) + ": " + reinterpret_cast<const char*>(msg));
  }
  // A failed JIT compile is not an error: pcre2_match then falls back to the interpreter.
  pcre2_jit_compile(code.get(), PCRE2_JIT_COMPLETE);
  return code;
}

struct merge_rule {
  int rank;
  int result;
};

// Repeated words skip BPE; bounded so that adversarial input cannot grow it without limit.
constexpr size_t word_cache_capacity = 1 << 16;

}  // namespace

struct tokenizer::impl {
  std::vector<std::string> tokens;
  std::vector<int> types;
  std::vector<std::string> token_bytes;  // what decode emits for each id
  std::unordered_map<std::string, int> ids;
  std::array<int, 256> byte_token{};  // id of each byte's symbol, -1 when the vocabulary lacks it
  std::unordered_map<uint64_t, merge_rule> merges;
  // Added tokens matched atomically in text, bucketed by first byte, longest first (HF matches
  // leftmost-longest).
  std::array<std::vector<int>, 256> specials_by_first_byte;
  std::vector<regex_ptr> stages;
  int bos = -1, eos = -1;
  bool chatml = false;
  std::string default_system;  // empty when the template inserts none
  std::string chat_template;

  mutable std::mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<int>> cache;

  void check_id(int id) const {
    if (id < 0 || id >= static_cast<int>(tokens.size()))
      throw tokenizer_error("token id " + std::to_string(id) + " is outside [0, " +
                            std::to_string(tokens.size()) + ")");
  }

  // Applies pre-tokenizer stage `stage` to `piece` (matches and the gaps between them both become
  // pieces) and hands each piece to the next stage, the last one to BPE.
  void split(size_t stage, std::string_view piece, std::vector<int>& out, match_data_ptr& md) const {
    if (stage == stages.size()) {
      bpe(piece, out);
      return;
    }
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(piece.data());
    size_t done = 0;
    while (done < piece.size()) {
      const int rc = pcre2_match(stages[stage].get(), subject, piece.size(), done,
                                 PCRE2_NO_UTF_CHECK, md.get(), nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) throw tokenizer_error("pre-tokenizer regex failed with PCRE2 error " + std::to_string(rc));
      // Copied out: the later stages reuse the match data. None of the patterns matches the
      // empty string, so every match moves `done` forward.
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
      const size_t begin = ov[0], end = ov[1];
      if (begin > done) split(stage + 1, piece.substr(done, begin - done), out, md);
      split(stage + 1, piece.substr(begin, end - begin), out, md);
      done = end;
    }
    if (done < piece.size()) split(stage + 1, piece.substr(done), out, md);
  }

  // Merges adjacent symbols lowest rank first, leftmost first among equal ranks, as HF does.
  // Bytes whose symbol the vocabulary lacks are dropped, as HF does without an unk token
  // (SmolLM2 lacks 21, e.g. 0x04 and bytes that never occur in UTF-8).
  void bpe(std::string_view word, std::vector<int>& out) const {
    if (word.size() == 1) {
      const int id = byte_token[static_cast<unsigned char>(word[0])];
      if (id >= 0) out.push_back(id);
      return;
    }
    const std::string key(word);
    {
      std::lock_guard<std::mutex> lock(cache_mutex);
      auto hit = cache.find(key);
      if (hit != cache.end()) {
        out.insert(out.end(), hit->second.begin(), hit->second.end());
        return;
      }
    }
    std::vector<int> sym;
    for (char c : word)
      if (byte_token[static_cast<unsigned char>(c)] >= 0) sym.push_back(byte_token[static_cast<unsigned char>(c)]);
    const int n = static_cast<int>(sym.size());
    std::vector<int> prev(n), next(n);
    for (int i = 0; i < n; ++i) {
      prev[i] = i - 1;
      next[i] = i + 1 < n ? i + 1 : -1;
    }
    struct candidate {
      int rank, pos, left, right, result;
      bool operator>(const candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::priority_queue<candidate, std::vector<candidate>, std::greater<candidate>> queue;
    const auto offer = [&](int pos) {
      if (pos < 0 || next[pos] < 0) return;
      auto m = merges.find(pair_key(sym[pos], sym[next[pos]]));
      if (m != merges.end()) queue.push({m->second.rank, pos, sym[pos], sym[next[pos]], m->second.result});
    };
    for (int i = 0; i + 1 < n; ++i) offer(i);
    while (!queue.empty()) {
      const candidate c = queue.top();
      queue.pop();
      // Entries go stale when either side has merged since; merged symbols get new ids.
      if (sym[c.pos] != c.left || next[c.pos] < 0 || sym[next[c.pos]] != c.right) continue;
      const int right = next[c.pos];
      sym[c.pos] = c.result;
      sym[right] = -1;
      next[c.pos] = next[right];
      if (next[right] >= 0) prev[next[right]] = c.pos;
      offer(prev[c.pos]);
      offer(c.pos);
    }
    std::vector<int> result;
    for (int i = n > 0 ? 0 : -1; i >= 0; i = next[i]) result.push_back(sym[i]);
    out.insert(out.end(), result.begin(), result.end());
    std::lock_guard<std::mutex> lock(cache_mutex);
    if (cache.size() < word_cache_capacity) cache.emplace(key, std::move(result));
  }

  void parse_chat_template() {
    std::string_view t = chat_template;
    if (t.substr(0, chatml_loop.size()) != chatml_loop) return;
    t.remove_prefix(chatml_loop.size());
    if (t.size() < chatml_body.size() || t.substr(t.size() - chatml_body.size()) != chatml_body) return;
    t.remove_suffix(chatml_body.size());
    if (t.empty()) {
      chatml = true;
      return;
    }
    if (t.substr(0, chatml_default_open.size()) != chatml_default_open) return;
    t.remove_prefix(chatml_default_open.size());
    if (t.size() < chatml_default_close.size() ||
        t.substr(t.size() - chatml_default_close.size()) != chatml_default_close)
      return;
    t.remove_suffix(chatml_default_close.size());
    // Anything Jinja would interpret differently (quotes, escapes, tags) is not a plain message.
    if (t.empty() || t.find_first_of("'\\{}") != std::string_view::npos) return;
    default_system = std::string(t);
    chatml = true;
  }
};

tokenizer::tokenizer(std::vector<std::string> tokens, std::vector<int> token_types,
                     const std::vector<std::string>& merges, tokenizer_options options)
    : impl_(std::make_unique<impl>()) {
  impl& d = *impl_;
  if (tokens.empty()) throw tokenizer_error("tokenizer vocabulary is empty");
  if (tokens.size() > static_cast<size_t>(std::numeric_limits<int>::max()))
    throw tokenizer_error("tokenizer vocabulary has too many tokens: " + std::to_string(tokens.size()));
  if (token_types.size() != tokens.size())
    throw tokenizer_error("tokenizer has " + std::to_string(tokens.size()) + " tokens but " +
                          std::to_string(token_types.size()) + " token types");
  d.tokens = std::move(tokens);
  d.types = std::move(token_types);
  const int n_vocab = static_cast<int>(d.tokens.size());
  for (int id = 0; id < n_vocab; ++id) d.ids.emplace(d.tokens[id], id);

  const auto code_points = byte_to_code_point();
  std::unordered_map<uint32_t, char> code_point_byte;
  for (int b = 0; b < 256; ++b) {
    code_point_byte.emplace(code_points[b], static_cast<char>(b));
    std::string symbol;
    kvtrim::utf8::append(symbol, code_points[b]);
    auto it = d.ids.find(symbol);
    d.byte_token[b] = it == d.ids.end() ? -1 : it->second;
  }

  d.token_bytes.resize(d.tokens.size());
  for (int id = 0; id < n_vocab; ++id) {
    const std::string& text = d.tokens[id];
    const int type = d.types[id];
    if (type == token_type_control || type == token_type_user_defined) {
      d.token_bytes[id] = text;  // added tokens are stored as plain text, not byte-mapped
      if (!text.empty()) d.specials_by_first_byte[static_cast<unsigned char>(text[0])].push_back(id);
      continue;
    }
    for (size_t i = 0; i < text.size();) {
      const size_t len = utf8_sequence_length(text, i);
      if (len == 0)
        throw tokenizer_error("token " + std::to_string(id) + " is not valid UTF-8");
      auto b = code_point_byte.find(decode_utf8_at(text, i, len));
      if (b != code_point_byte.end()) d.token_bytes[id] += b->second;
      else d.token_bytes[id].append(text, i, len);  // outside the byte alphabet: kept verbatim
      i += len;
    }
  }
  for (auto& bucket : d.specials_by_first_byte)
    std::stable_sort(bucket.begin(), bucket.end(),
                     [&](int a, int b) { return d.tokens[a].size() > d.tokens[b].size(); });

  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const std::string& m = merges[rank];
    const size_t space = m.find(' ', 1);
    const auto bad = [&](const std::string& why) {
      return tokenizer_error("merge #" + std::to_string(rank) + " '" + m + "': " + why);
    };
    if (space == std::string::npos || space + 1 >= m.size()) throw bad("expected 'left right'");
    const std::string left = m.substr(0, space), right = m.substr(space + 1);
    auto l = d.ids.find(left), r = d.ids.find(right), res = d.ids.find(left + right);
    if (l == d.ids.end() || r == d.ids.end() || res == d.ids.end())
      throw bad("a part or the merged token is not in the vocabulary");
    d.merges.emplace(pair_key(l->second, r->second), merge_rule{static_cast<int>(rank), res->second});
  }

  for (int id : {options.bos_id, options.eos_id})
    if (id < -1 || id >= n_vocab)
      throw tokenizer_error("special token id " + std::to_string(id) + " is outside [0, " +
                            std::to_string(n_vocab) + ")");
  d.bos = options.bos_id;
  d.eos = options.eos_id;

  if (options.pre == pre_tokenizer::smollm) d.stages.push_back(compile(numeric_char_pattern));
  d.stages.push_back(compile(gpt2_pattern));

  d.chat_template = std::move(options.chat_template);
  d.parse_chat_template();
}

tokenizer tokenizer::from_gguf(const gguf_file& file) {
  const std::string model = file.get_string("tokenizer.ggml.model");
  if (model != "gpt2")
    throw tokenizer_error("unsupported tokenizer model '" + model +
                          "' in " + file.path() + ": only 'gpt2' (byte-level BPE) is implemented");
  tokenizer_options options;
  const std::string pre = file.has("tokenizer.ggml.pre") ? file.get_string("tokenizer.ggml.pre") : "<missing>";
  if (pre == "smollm") options.pre = pre_tokenizer::smollm;
  else if (pre == "gpt2") options.pre = pre_tokenizer::gpt2;
  else
    throw tokenizer_error("unsupported pre-tokenizer '" + pre + "' (tokenizer.ggml.pre) in " + file.path() +
                          ": accepted are 'smollm' and 'gpt2'");
  const auto id_key = [&](const char* key) {
    if (!file.has(key)) return -1;
    const uint64_t v = file.get_uint(key);
    if (v > static_cast<uint64_t>(std::numeric_limits<int>::max()))
      throw tokenizer_error(std::string(key) + " = " + std::to_string(v) + " is not a token id");
    return static_cast<int>(v);
  };
  options.bos_id = id_key("tokenizer.ggml.bos_token_id");
  options.eos_id = id_key("tokenizer.ggml.eos_token_id");
  if (file.has("tokenizer.chat_template")) options.chat_template = file.get_string("tokenizer.chat_template");

  std::vector<std::string> tokens = file.get_string_array("tokenizer.ggml.tokens");
  std::vector<int> types(tokens.size(), token_type_normal);
  if (file.has("tokenizer.ggml.token_type")) {
    const std::vector<int64_t> raw = file.get_int_array("tokenizer.ggml.token_type");
    if (raw.size() != tokens.size())
      throw tokenizer_error("tokenizer.ggml.token_type has " + std::to_string(raw.size()) + " entries for " +
                            std::to_string(tokens.size()) + " tokens");
    for (size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] < 0 || raw[i] > 6)  // GGUF defines types 0 (undefined) .. 6 (byte)
        throw tokenizer_error("tokenizer.ggml.token_type[" + std::to_string(i) + "] = " +
                              std::to_string(raw[i]) + " is outside [0, 6]");
      types[i] = static_cast<int>(raw[i]);
    }
  }
  return tokenizer(std::move(tokens), std::move(types), file.get_string_array("tokenizer.ggml.merges"),
                   std::move(options));
}

tokenizer::~tokenizer() = default;
tokenizer::tokenizer(tokenizer&&) noexcept = default;
tokenizer& tokenizer::operator=(tokenizer&&) noexcept = default;

std::vector<int> tokenizer::encode(std::string_view text, bool parse_special) const {
  const impl& d = *impl_;
  for (size_t i = 0; i < text.size();) {
    const size_t len = utf8_sequence_length(text, i);
    if (len == 0) throw tokenizer_error("text to encode is not valid UTF-8 at byte " + std::to_string(i));
    i += len;
  }
  std::vector<int> out;
  out.reserve(text.size() / 3);
  match_data_ptr md(pcre2_match_data_create(1, nullptr));
  size_t start = 0;  // first byte not yet tokenized
  for (size_t i = 0; i < text.size();) {
    int found = -1;
    for (int id : d.specials_by_first_byte[static_cast<unsigned char>(text[i])]) {
      if (!parse_special && d.types[id] == token_type_control) continue;
      if (text.compare(i, d.tokens[id].size(), d.tokens[id]) == 0) {
        found = id;
        break;
      }
    }
    if (found < 0) {
      ++i;
      continue;
    }
    d.split(0, text.substr(start, i - start), out, md);
    out.push_back(found);
    i += d.tokens[found].size();
    start = i;
  }
  d.split(0, text.substr(start), out, md);
  return out;
}

std::string tokenizer::decode(const std::vector<int>& ids, bool skip_special) const {
  const impl& d = *impl_;
  std::string out;
  for (int id : ids) {
    d.check_id(id);
    if (skip_special && d.types[id] == token_type_control) continue;
    out += d.token_bytes[id];
  }
  return out;
}

const std::string& tokenizer::token_text(int id) const {
  impl_->check_id(id);
  return impl_->tokens[id];
}

int tokenizer::id_of(std::string_view token_text) const {
  auto it = impl_->ids.find(std::string(token_text));
  if (it == impl_->ids.end()) throw tokenizer_error("token '" + std::string(token_text) + "' is not in the vocabulary");
  return it->second;
}

bool tokenizer::is_control(int id) const {
  impl_->check_id(id);
  return impl_->types[id] == token_type_control;
}

int tokenizer::n_vocab() const { return static_cast<int>(impl_->tokens.size()); }
int tokenizer::bos() const { return impl_->bos; }
int tokenizer::eos() const { return impl_->eos; }

std::string tokenizer::apply_chat_template(const std::vector<chat_message>& messages,
                                           bool add_generation_prompt) const {
  const impl& d = *impl_;
  if (!d.chatml)
    throw tokenizer_error(d.chat_template.empty()
                              ? "the model has no chat template"
                              : "unsupported chat template (only ChatML is implemented): " +
                                    d.chat_template.substr(0, 120));
  std::string out;
  if (!messages.empty() && messages.front().first != "system" && !d.default_system.empty())
    out += "<|im_start|>system\n" + d.default_system + "<|im_end|>\n";
  for (const auto& [role, content] : messages) out += "<|im_start|>" + role + "\n" + content + "<|im_end|>\n";
  if (add_generation_prompt) out += "<|im_start|>assistant\n";
  return out;
}

}  // namespace kvhost
