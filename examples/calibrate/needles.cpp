// The probes and data files of calibration, and the choice among them.
#include <algorithm>
#include <stdexcept>

#include "calibrate/stage.hpp"

namespace kvhost {

const std::vector<named_needle>& retrieval_needles() {
  static const std::vector<named_needle> n = {
      {"lemon-cake",
       {"The secret ingredient in Grandma Odile's lemon cake is a spoonful of lavender honey.",
       "What is the secret ingredient in Grandma Odile's lemon cake?", "a spoonful of lavender honey",
       "The secret ingredient in Grandma Odile's lemon cake is"}},
      {"observatory",
       {"The password for the Kestrel Valley observatory is copper violin seventeen.",
       "What is the password for the Kestrel Valley observatory?", "copper violin seventeen",
       "The password for the Kestrel Valley observatory is"}},
      {"lighthouse",
       {"The lighthouse keeper on Marrow Island paints every door bright orange to keep the winter fog away.",
       "What does the lighthouse keeper on Marrow Island do to every door?",
       "paints every door bright orange", "The lighthouse keeper on Marrow Island"}},
      {"horse",
       {"The best way to calm a nervous horse is to hum a slow lullaby and offer it a green apple.",
       "What is the best way to calm a nervous horse?", "hum a slow lullaby and offer it a green apple",
       "The best way to calm a nervous horse is to"}},
      {"clock",
       {"The oldest clock in the Fenwick museum was cast from melted church bells in 1642.",
       "What was the oldest clock in the Fenwick museum cast from?", "melted church bells",
       "The oldest clock in the Fenwick museum was cast from"}},
  };
  return n;
}

const std::vector<named_needle>& reasoning_needles() {
  static const std::vector<named_needle> n = {
      {"collectors",
       {"Oren Castellane is 72 years old and collects antique maps. Priya Lindqvist is 35 years old "
       "and collects vintage cameras.",
       "Who is older, Oren Castellane or Priya Lindqvist, and what does that person collect?",
       "Oren Castellane collects antique maps", "The older person is"}},
      {"bridges",
       {"The Hallberg bridge is 340 metres long and is painted green. The Osterley bridge is 910 metres "
       "long and is painted red.",
       "Which bridge is longer, the Hallberg bridge or the Osterley bridge, and what colour is it painted?",
       "The Osterley bridge is painted red", "The longer bridge is"}},
      {"captains",
       {"Captain Ilse Moreau has sailed for 12 years and her ship is called the Gannet. Captain Dario "
       "Pike has sailed for 31 years and his ship is called the Heron.",
       "Which captain has sailed longer, and what is that captain's ship called?",
       "Captain Dario Pike ship Heron", "The captain who has sailed longer is"}},
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

namespace calib {

std::vector<named_needle> pick_needles(const std::vector<named_needle>& all, const std::vector<std::string>& names,
                                       const char* what) {
  if (names.empty()) return all;
  std::vector<named_needle> out;
  for (const auto& n : names) {
    auto it = std::find_if(all.begin(), all.end(), [&](const named_needle& p) { return p.name == n; });
    if (it == all.end()) {
      std::string known;
      for (const auto& p : all) known += (known.empty() ? "" : ", ") + p.name;
      throw std::invalid_argument(std::string("unknown ") + what + " needle '" + n + "' (accepted: " + known + ")");
    }
    out.push_back(*it);
  }
  return out;
}

}  // namespace calib
}  // namespace kvhost
