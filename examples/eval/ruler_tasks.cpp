// RULER-style synthetic tasks (eval_tasks.hpp: ruler_options), written from the RULER paper's
// description (Hsieh et al., 2024): noise or essay haystacks, key/value needles and distractors.
#include <algorithm>
#include <cmath>
#include <functional>
#include <sstream>
#include <stdexcept>

#include "eval/eval_tasks.hpp"

namespace kvhost {

namespace {

struct rng {
  uint64_t x;
  uint64_t next() { return x = mix_seed(x); }
  size_t below(size_t n) { return static_cast<size_t>(next() % n); }
};

const char* k_adjectives[] = {"quiet", "amber", "brave", "cold", "dusty", "eager", "fancy", "gentle", "hollow",
                              "icy", "jolly", "kind", "lively", "misty", "noble", "odd", "proud", "rapid",
                              "silent", "tidy", "vast", "wild", "young", "zesty"};
const char* k_nouns[] = {"river", "falcon", "garden", "hammer", "island", "jacket", "kettle", "lantern", "meadow",
                         "needle", "orchard", "pepper", "quarry", "rocket", "saddle", "tunnel", "valley", "window",
                         "yogurt", "zebra", "anchor", "basket", "candle", "dragon"};

std::string word_key(rng& r) {
  return std::string(k_adjectives[r.below(24)]) + "-" + k_nouns[r.below(24)];
}
std::string number_value(rng& r) { return std::to_string(1000000 + r.below(9000000)); }
std::string uuid_value(rng& r) {
  static const char* hex = "0123456789abcdef";
  std::string u;
  for (int i = 0; i < 32; ++i) {
    if (i == 8 || i == 12 || i == 16 || i == 20) u += '-';
    u += hex[r.below(16)];
  }
  return u;
}

const char* k_noise = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";

// Sentences of the essays from a seeded offset.
std::vector<std::string> essay_units(const std::string& essays, rng& r, size_t count) {
  std::vector<std::string> out;
  size_t at = r.below(essays.size() / 2);
  while (out.size() < count) {
    const size_t end = essays.find(". ", at);
    if (end == std::string::npos) {
      at = 0;
      continue;
    }
    std::string s = essays.substr(at, end + 1 - at);
    for (char& c : s)
      if (c == '\n') c = ' ';
    if (s.find_first_not_of(' ') != std::string::npos) out.push_back(s);
    at = end + 2;
  }
  return out;
}

// The largest k in [1, hi] whose build(k) fits `target` tokens (a few encodes: scaled guess, then steps).
template <class F>
std::string fit_tokens(const tokenizer& tok, int64_t target, size_t hi, F build) {
  auto count = [&](size_t k) { return static_cast<int64_t>(tok.encode(build(k), true).size()); };
  size_t k = std::min<size_t>(hi, 64);
  for (int it = 0; it < 6; ++it) {
    const int64_t n = count(k);
    const size_t next = std::max<size_t>(1, std::min<size_t>(hi, static_cast<size_t>(static_cast<double>(k) *
                                                                                    static_cast<double>(target) /
                                                                                    static_cast<double>(n) * 0.99)));
    if (next == k) break;
    k = next;
  }
  while (k > 1 && count(k) > target) k = k * 97 / 100;
  const std::string text = build(k);
  if (static_cast<int64_t>(tok.encode(text, true).size()) > target)
    throw std::invalid_argument("ruler: " + std::to_string(target) + " tokens are too few for this task's fixed part");
  return text;
}

}  // namespace

const std::vector<std::string>& ruler_task_names() {
  static const std::vector<std::string> n = {"niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1",
                                             "niah_multikey_2", "niah_multikey_3", "niah_multivalue",
                                             "niah_multiquery", "vt", "cwe", "fwe"};
  return n;
}

std::vector<eval_sample> ruler_samples(const tokenizer& tok, const std::string& essays, const ruler_options& o) {
  const auto& all = ruler_task_names();
  const std::vector<std::string> tasks = o.tasks.empty() ? all : o.tasks;
  for (const auto& t : tasks)
    if (std::find(all.begin(), all.end(), t) == all.end()) throw std::invalid_argument("ruler: unknown task '" + t + "'");
  std::vector<eval_sample> out;
  for (const auto& task : tasks) {
    for (int64_t len : o.lengths) {
      for (int si = 0; si < o.samples; ++si) {
        rng r{mix_seed(o.seed) ^ mix_seed(std::hash<std::string>{}(task)) ^ mix_seed(static_cast<uint64_t>(len) * 131 + si)};
        eval_sample s;
        s.task = "ruler_" + task;
        s.id = s.task + "-L" + std::to_string(len) + "-S" + std::to_string(si);
        s.metric = "string_match_all";
        s.max_new_tokens = 64;
        std::string user, prefix;
        const int64_t room = len - 8;  // chat markup tokens beyond the user text are counted by fit_tokens
        auto chat = [&](const std::string& u, const std::string& p) {
          return tok.apply_chat_template({{"user", u}}, true) + p;
        };
        if (task.rfind("niah", 0) == 0) {
          const bool noise = task == "niah_single_1" || task == "niah_multikey_2";
          const bool uuid_val = task == "niah_single_3" || task == "niah_multikey_3";
          const bool uuid_key = task == "niah_multikey_3";
          const int n_keys = task == "niah_multikey_1" ? 4 : (task == "niah_multiquery" ? 4 : 1);
          const int n_vals = task == "niah_multivalue" ? 4 : 1;
          // Distractor needles fill a "haystack of needles", scaled to the length (RULER's need the room).
          const int distract = (task == "niah_multikey_2" || task == "niah_multikey_3")
                                   ? static_cast<int>(std::clamp<int64_t>(len / 150, 3, 40))
                                   : 0;
          const std::string kind = uuid_val ? "uuids" : "numbers";
          std::vector<std::string> keys, needles;
          std::vector<std::vector<std::string>> vals;
          for (int k = 0; k < n_keys + distract; ++k) {
            std::string key;
            do key = uuid_key ? uuid_value(r) : word_key(r);
            while (std::find(keys.begin(), keys.end(), key) != keys.end());
            keys.push_back(key);
            vals.emplace_back();
            for (int v = 0; v < n_vals; ++v) {
              vals.back().push_back(uuid_val ? uuid_value(r) : number_value(r));
              needles.push_back("One of the special magic " + kind + " for " + key + " is: " + vals.back().back() + ".");
            }
          }
          // Queried: the first key (multiquery: the first 4); multikey_1's other 3 keys are distractors.
          const int n_query = task == "niah_multiquery" ? 4 : 1;
          std::string query;
          for (int q = 0; q < n_query; ++q) {
            query += (q ? (q + 1 == n_query ? ", and " : ", ") : "") + keys[size_t(q)];
            for (const auto& v : vals[size_t(q)]) s.references.push_back(v);
          }
          const std::vector<std::string> hay =
              noise ? std::vector<std::string>(4096, k_noise) : essay_units(essays, r, 4096);
          // Needle slots: seeded positions among the haystack units (fractions of its length).
          std::vector<double> where;
          for (size_t i = 0; i < needles.size(); ++i) where.push_back(static_cast<double>(r.below(1000)) / 1000.0);
          const std::string head = "Some special magic " + kind + " are hidden within the following text. Make sure "
                                   "to memorize it. I will quiz you about the " + kind + " afterwards.\n";
          const std::string tail = "\nWhat " + std::string(s.references.size() > 1 ? "are all" : "is") +
                                   " the special magic " + kind + " for " + query + " mentioned in the provided text?";
          prefix = " The special magic " + kind + " for " + query + " mentioned in the provided text " +
                   (s.references.size() > 1 ? "are" : "is");
          auto build = [&](size_t k) {
            std::vector<std::string> units(hay.begin(), hay.begin() + static_cast<std::ptrdiff_t>(k));
            std::vector<std::pair<size_t, size_t>> at;  // (unit index, needle)
            for (size_t i = 0; i < needles.size(); ++i) at.push_back({static_cast<size_t>(where[i] * k), i});
            std::sort(at.rbegin(), at.rend());
            for (const auto& [u, i] : at) units.insert(units.begin() + static_cast<std::ptrdiff_t>(u), needles[i]);
            std::string ctx;
            for (const auto& u : units) ctx += (ctx.empty() ? "" : " ") + u;
            return chat(head + ctx + tail, prefix);
          };
          const std::string text = fit_tokens(tok, room, hay.size(), build);
          s.prompt = encode32(tok, text);
          s.meta = {{"length", len}, {"keys", n_keys + distract}, {"values", n_vals}};
        } else if (task == "vt") {
          // One chain of 4 hops: VAR A = 12345, VAR B = VAR A, ... among noise.
          const std::string value = std::to_string(10000 + r.below(90000));
          std::vector<std::string> names, stmts;
          for (int i = 0; i < 5; ++i) {
            std::string v;
            for (int c = 0; c < 5; ++c) v += static_cast<char>('A' + r.below(26));
            names.push_back(v);
            stmts.push_back("VAR " + v + " = " + (i == 0 ? value : "VAR " + names[size_t(i - 1)]) + ".");
          }
          s.references = names;
          std::vector<double> where;
          for (size_t i = 0; i < stmts.size(); ++i) where.push_back((static_cast<double>(i) + static_cast<double>(r.below(900)) / 1000.0) / 5.0);
          const std::string head = "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n";
          const std::string tail = "\nQuestion: Find all variables that are assigned the value " + value +
                                   " in the text above.";
          prefix = " Answer: According to the chain(s) of variable assignment in the text above, 5 variables are "
                   "assigned the value " + value + ", they are: ";
          auto build = [&](size_t k) {
            std::vector<std::string> units(k, k_noise);
            for (size_t i = stmts.size(); i-- > 0;) units.insert(units.begin() + static_cast<std::ptrdiff_t>(where[i] * k), stmts[i]);
            std::string ctx;
            for (const auto& u : units) ctx += (ctx.empty() ? "" : " ") + u;
            return chat(head + ctx + tail, prefix);
          };
          s.prompt = encode32(tok, fit_tokens(tok, room, 4096, build));
          s.meta = {{"length", len}, {"hops", 4}};
        } else if (task == "cwe") {
          // 10 common words x f, the rest x 3 (f = 30 at 4.5k+ tokens, fewer below), shuffled, numbered.
          const int f_common = static_cast<int>(std::clamp<int64_t>(len / 150, 5, 30)), f_rare = std::min(3, f_common - 2);
          std::vector<std::string> vocab;
          for (const char* a : k_adjectives)
            for (const char* n : k_nouns) vocab.push_back(std::string(a) + n);
          for (size_t i = vocab.size(); i > 1; --i) std::swap(vocab[i - 1], vocab[r.below(i)]);
          s.references.assign(vocab.begin(), vocab.begin() + 10);
          const uint64_t shuffle_seed = r.next();
          auto build = [&](size_t k) {  // k: uncommon words
            std::vector<std::string> words;
            for (size_t i = 0; i < 10; ++i)
              for (int c = 0; c < f_common; ++c) words.push_back(vocab[i]);
            for (size_t i = 0; i < k && 10 + i < vocab.size(); ++i)
              for (int c = 0; c < f_rare; ++c) words.push_back(vocab[10 + i]);
            rng sr{shuffle_seed};
            for (size_t i = words.size(); i > 1; --i) std::swap(words[i - 1], words[sr.below(i)]);
            std::string list;
            for (size_t i = 0; i < words.size(); ++i) list += std::to_string(i + 1) + ". " + words[i] + " ";
            return chat("Below is a numbered list of words. In these words, some appear more often than others. "
                        "Memorize the ones that appear most often.\n" + list +
                        "\nQuestion: What are the 10 most common words in the above list?",
                        " Answer: The top 10 words that appear most often in the list are:");
          };
          s.prompt = encode32(tok, fit_tokens(tok, room, vocab.size() - 10, build));
          s.max_new_tokens = 120;
          s.meta = {{"length", len}};
        } else {  // fwe: coded words with Zipf-like counts; the 3 most frequent are asked
          std::vector<std::string> vocab;
          for (int i = 0; i < 100; ++i) {
            std::string w;
            for (int c = 0; c < 5; ++c) w += static_cast<char>('a' + r.below(26));
            vocab.push_back(w);
          }
          s.references.assign(vocab.begin(), vocab.begin() + 3);
          const uint64_t shuffle_seed = r.next();
          auto build = [&](size_t k) {  // k: total words; word i appears ~ k / (i+1)^2 times
            std::vector<std::string> words;
            double z = 0;
            for (size_t i = 0; i < vocab.size(); ++i) z += 1.0 / static_cast<double>((i + 1) * (i + 1));
            for (size_t i = 0; i < vocab.size(); ++i) {
              const auto c = static_cast<size_t>(static_cast<double>(k) / z / static_cast<double>((i + 1) * (i + 1)));
              for (size_t j = 0; j < std::max<size_t>(1, c); ++j) words.push_back(vocab[i]);
            }
            rng sr{shuffle_seed};
            for (size_t i = words.size(); i > 1; --i) std::swap(words[i - 1], words[sr.below(i)]);
            std::string text;
            for (const auto& w : words) text += (text.empty() ? "" : " ") + w;
            return chat("Read the following coded text and track the frequency of each coded word. Find the three "
                        "most frequently appeared coded words. " + text +
                        "\nQuestion: Do not provide any explanation. Please ignore the dots '....'. What are the "
                        "three most frequently appeared words in the above coded text?",
                        " Answer: According to the coded text above, the three most frequently appeared words are:");
          };
          s.prompt = encode32(tok, fit_tokens(tok, room, 20000, build));
          s.max_new_tokens = 50;
          s.meta = {{"length", len}};
        }
        out.push_back(std::move(s));
      }
    }
  }
  return out;
}

}  // namespace kvhost
