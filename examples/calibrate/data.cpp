#include "calibrate/data.hpp"

#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <stdexcept>

namespace kvhost::calib {

namespace {

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

}  // namespace

calibration_data::calibration_data(const tokenizer& tok, const calibration_options& opt) : tok_(tok), opt_(opt) {
  const std::string dir = opt_.data_dir.empty() ? default_calibration_data_dir() : opt_.data_dir;
  docs_ = load_docs(dir, files_);
  if (docs_.empty()) throw std::runtime_error("no calibration records in " + dir + "/leval");
  // The haystack order: every record, shuffled by the seed.
  order_.resize(docs_.size());
  for (size_t i = 0; i < order_.size(); ++i) order_[i] = i;
  std::mt19937_64 rng(opt_.seed);
  for (size_t i = order_.size(); i > 1; --i) std::swap(order_[i - 1], order_[static_cast<size_t>(rng() % i)]);
}

std::vector<int32_t> calibration_data::haystack(size_t start, int64_t n) {
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

// A stage-"layers" prompt: the record's text cut to fit layer_prompt_tokens, then its instruction.
std::vector<int32_t> calibration_data::layer_prompt(const doc& d, size_t instruction) const {
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

std::vector<std::pair<std::string, std::vector<int32_t>>> calibration_data::layer_prompts() const {
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

}  // namespace kvhost::calib
