// Byte-level BPE tokenizer (GPT-2 style, tokenizer.ggml.model = "gpt2") for the reference host,
// exact against Hugging Face `tokenizers` on SmolLM2 (tests/golden/tokenizer_*.json), plus the
// ChatML chat template those models ship. PCRE2 stays out of this header (pimpl).
#pragma once

#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kvhost {

class gguf_file;

struct tokenizer_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// How text is split into words before BPE (GGUF key tokenizer.ggml.pre).
enum class pre_tokenizer {
  gpt2,    // the GPT-2 regex alone
  smollm,  // every numeric character split off alone, then the GPT-2 regex on each piece
};

// GGUF token_type values the tokenizer acts on; the others are ordinary vocabulary.
enum token_type : int {
  token_type_normal = 1,
  token_type_control = 3,       // special: matched in text only when encode(parse_special=true)
  token_type_user_defined = 4,  // added token: always matched in text, never BPE-split
};

struct tokenizer_options {
  int bos_id = -1;  // -1: none
  int eos_id = -1;
  pre_tokenizer pre = pre_tokenizer::smollm;
  // Jinja source as stored in the GGUF (tokenizer.chat_template); empty: the model has none.
  std::string chat_template;
};

using chat_message = std::pair<std::string, std::string>;  // role, content

class tokenizer {
 public:
  // tokens[i] is id i's text in byte-level form ("Ġthe"); token_types as in GGUF; merges are
  // "left right" in rank order. Throws tokenizer_error on inconsistent data (sizes, a merge
  // missing from the vocabulary, special ids out of range).
  tokenizer(std::vector<std::string> tokens, std::vector<int> token_types,
            const std::vector<std::string>& merges, tokenizer_options options);
  // Reads tokenizer.ggml.*; rejects models other than "gpt2" and unknown pre-tokenizers.
  static tokenizer from_gguf(const gguf_file& file);

  ~tokenizer();
  tokenizer(tokenizer&&) noexcept;
  tokenizer& operator=(tokenizer&&) noexcept;

  // Never adds BOS/EOS. Control tokens written in the text become their id only when
  // parse_special is set; otherwise they are tokenized as plain text. Bytes without a symbol in
  // the vocabulary are dropped (as HF does). Throws tokenizer_error on invalid UTF-8.
  // Thread-safe (the word cache is locked).
  std::vector<int> encode(std::string_view text, bool parse_special) const;
  // Raw bytes of the ids concatenated: UTF-8 whenever the ids cover whole characters (a cut
  // through a multi-byte character is returned as is, so streaming callers can buffer it).
  std::string decode(const std::vector<int>& ids, bool skip_special = false) const;

  const std::string& token_text(int id) const;  // vocabulary entry as stored ("Ġthe")
  int id_of(std::string_view token_text) const;  // throws tokenizer_error when absent
  bool is_control(int id) const;
  int n_vocab() const;
  int bos() const;  // -1 when the model has none
  int eos() const;

  // The model's chat template. Only ChatML (as in SmolLM2 and Qwen2, with or without a default
  // system message) is implemented; any other template throws tokenizer_error here.
  std::string apply_chat_template(const std::vector<chat_message>& messages,
                                  bool add_generation_prompt) const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace kvhost
