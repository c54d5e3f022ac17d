#include "engine/haystack.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace kvhost {

namespace fs = std::filesystem;

std::string find_essay_dir() {
  if (const char* env = std::getenv("KVTRIM_HAYSTACK"); env && *env) return env;
  if (const char* home = std::getenv("HOME")) {
    const fs::path p = fs::path(home) / ".cache" / "kvtrim" / "pg_essays";
    if (fs::exists(p / ".complete")) return p.string();
  }
  return "";
}

std::string load_text_dir(const std::string& dir) {
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file() && e.path().extension() == ".txt" &&
        e.path().filename().string().find("LICENSE") == std::string::npos)  // REPO_LICENSE.txt
      files.push_back(e.path());
  if (files.empty()) throw std::runtime_error("no .txt files in " + dir);
  std::sort(files.begin(), files.end());
  std::string out;
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    out += ss.str();
    out += "\n";
  }
  return out;
}

std::string generated_haystack(size_t chars) {
  // Sentences built from fixed word lists by a small LCG: readable, varied, reproducible.
  static const char* subjects[] = {"The committee", "A small team", "The old river", "Every student",
                                   "The city council", "A careful reader", "The first engineer",
                                   "Our neighbour", "The museum", "A quiet village"};
  static const char* verbs[] = {"considered", "described", "rebuilt", "questioned", "admired",
                                "measured", "forgot", "explained", "painted", "visited"};
  static const char* objects[] = {"the northern bridge", "a long letter", "the spring harvest",
                                  "an unusual clock", "the public library", "a winding road",
                                  "the annual report", "a forgotten song", "the harbour lights",
                                  "an early map"};
  static const char* tails[] = {"before the rain began", "with great patience", "for the third time",
                                "after a long debate", "without any help", "late in the evening",
                                "as the seasons changed", "during the festival", "in the morning",
                                "once again"};
  std::string out;
  std::uint64_t x = 0x9e3779b97f4a7c15ull;
  auto pick = [&x](size_t n) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<size_t>((x >> 33) % n);
  };
  while (out.size() < chars) {
    out += subjects[pick(10)];
    out += ' ';
    out += verbs[pick(10)];
    out += ' ';
    out += objects[pick(10)];
    out += ' ';
    out += tails[pick(10)];
    out += pick(6) == 0 ? ".\n\n" : ". ";
  }
  return out;
}

}  // namespace kvhost
