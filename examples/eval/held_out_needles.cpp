// The needles `kvtrim eval niah --variants heldout` hides: facts of the same shape as calibration's
// (calibrate/needles.cpp) but sharing none of their words that carry the answer, so the heads a
// profile learned on calibration's needles are tested on needles they never saw.
#include "eval/eval_tasks.hpp"

namespace kvhost {

const std::vector<named_needle>& held_out_needles() {
  static const std::vector<named_needle> n = {
      {"boathouse",
       {"The key to the Alderney boathouse is hidden under a blue ceramic frog.",
        "Where is the key to the Alderney boathouse hidden?", "under a blue ceramic frog",
        "The key to the Alderney boathouse is hidden"}},
      {"seeds",
       {"Professor Tamsin Vale keeps her rarest seeds in a silver tea tin on the top shelf.",
        "Where does Professor Tamsin Vale keep her rarest seeds?", "in a silver tea tin on the top shelf",
        "Professor Tamsin Vale keeps her rarest seeds"}},
      {"chutney",
       {"The winning recipe at the Brackenridge fair was smoked pear chutney with black pepper.",
        "What was the winning recipe at the Brackenridge fair?", "smoked pear chutney with black pepper",
        "The winning recipe at the Brackenridge fair was"}},
      {"train",
       {"The night train to Valdoria leaves from platform nine at a quarter past eleven.",
        "Where and when does the night train to Valdoria leave?", "platform nine at a quarter past eleven",
        "The night train to Valdoria leaves from"}},
      {"choir",
       {"The Quillan choir warms up by singing the alphabet backwards in a whisper.",
        "How does the Quillan choir warm up?", "singing the alphabet backwards in a whisper",
        "The Quillan choir warms up by"}},
      {"expedition",
       {"The code word for the Halvorsen expedition was purple kettle.",
        "What was the code word for the Halvorsen expedition?", "purple kettle",
        "The code word for the Halvorsen expedition was"}},
      {"sunflowers",
       {"Every spring the gardeners of Wrenfield plant exactly forty-one sunflowers along the canal.",
        "What do the gardeners of Wrenfield plant along the canal every spring?", "forty-one sunflowers",
        "Every spring the gardeners of Wrenfield plant exactly"}},
      {"astronaut",
       {"The favourite snack of the astronaut Mira Solberg is salted mango with chili.",
        "What is the favourite snack of the astronaut Mira Solberg?", "salted mango with chili",
        "The favourite snack of the astronaut Mira Solberg is"}},
  };
  return n;
}

std::string rotated_haystack(const std::string& text, int rotation, uint64_t seed) {
  if (rotation == 0 || text.empty()) return text;
  size_t at = mix_seed(seed * 104729 + static_cast<uint64_t>(rotation)) % text.size();
  const size_t line = text.find('\n', at);  // start at a line (the essays have few blank lines)
  at = line == std::string::npos ? 0 : line + 1;
  if (at == 0 || at >= text.size()) return text;
  return text.substr(at) + "\n" + text.substr(0, at);
}

}  // namespace kvhost
