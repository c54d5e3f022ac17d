#pragma once
// Needle-in-a-haystack prompts, the one builder `kvtrim eval`, `kvtrim demo` and `kvtrim calibrate`
// share, and the word-level scores their answers are judged by.
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/tokenizer.hpp"

namespace kvhost {

struct needle {
  std::string fact;      // inserted into the haystack
  std::string question;  // asked after it
  std::string answer;    // the span the answer must contain (scored by ROUGE-1 recall)
  std::string answer_prefix;  // the assistant's answer is primed with this
};
// A needle with the name its records are keyed by: calibration's probes and eval's held-out needles.
struct named_needle {
  std::string name;
  needle nd;
};
needle classic_needle();  // "The best thing to do in San Francisco is eat a sandwich and ..."

// How the fact and the haystack become tokens.
enum class needle_splice {
  // The fact goes into the document text after a '.' or '\n' and the whole prompt is tokenised at
  // once, as a user's prompt would be (eval, demo).
  text,
  // Haystack tokens, the fact's tokens and the frame's are joined after a sentence-ending token, so
  // the fact's token span is exact (calibration scores attention over it).
  tokens,
};

struct needle_layout {
  needle_splice splice = needle_splice::text;
  std::string instruction = "Answer with the sentence from the document.";  // after the question
};

// The first n haystack tokens (n > 0); throws when the haystack has fewer.
using haystack_tokens = std::function<std::vector<int32_t>(int64_t n)>;

struct needle_prompt {
  std::vector<int32_t> tokens;
  std::string text;            // the prompt's text (needle_splice::text only)
  double depth = 0;            // requested depth in [0, 1]
  int64_t needle_char = 0;     // where the fact starts in the document (needle_splice::text)
  int64_t document_chars = 0;  // haystack + fact (needle_splice::text)
  int64_t span_begin = 0, span_end = 0;  // the fact's tokens in `tokens` (needle_splice::tokens)
};

// Thrown when target_tokens leaves too little room for the haystack; `overhead` is what the frame
// and the fact take, for callers that word the error their own way.
struct needle_prompt_too_short : std::invalid_argument {
  needle_prompt_too_short(const std::string& what, int64_t frame_tokens)
      : std::invalid_argument(what), overhead(frame_tokens) {}
  int64_t overhead;
};

// A ChatML prompt of about `target_tokens` tokens: "Read the document and answer the question.",
// the start of the haystack with the fact inserted at `depth` of the document (moved back to the
// previous sentence end), the question and the layout's instruction; the assistant's turn is
// opened and primed with answer_prefix. Throws std::invalid_argument when the target is too short
// for the frame or the depth is outside [0, 1].
needle_prompt build_needle_prompt(const tokenizer& tok, const haystack_tokens& haystack, int64_t target_tokens,
                                  double depth, const needle& nd, const needle_layout& layout);
// The same with the haystack as text and needle_layout{} (eval's and the demo's prompt).
needle_prompt build_needle_prompt(const tokenizer& tok, const std::string& haystack, int64_t target_tokens,
                                  double depth, const needle& nd);

// Lower-cased alphanumeric words, in order (what the word-level metrics compare).
std::vector<std::string> words(const std::string& s);

// ROUGE-1 recall of `reference`'s words in `candidate` (lower-cased alphanumeric words, clipped
// counts), in [0, 1].
double rouge1_recall(const std::string& candidate, const std::string& reference);

// Word-level F1 of candidate vs reference (lower-cased alphanumeric words), in [0, 1].
double word_f1(const std::string& candidate, const std::string& reference);

}  // namespace kvhost
