#pragma once
// The calibration data (L-Eval's calibration files, never evaluation data): every record in a
// seeded order, the haystacks of the needle stages and the prompts of stage "layers".
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "calibrate/calibration.hpp"
#include "engine/tokenizer.hpp"

namespace kvhost::calib {

struct doc {
  std::string dataset;
  std::string input;
  std::vector<std::string> instructions;
};

class calibration_data {
 public:
  // Reads <data_dir>/leval/<dataset>.jsonl for every calibration dataset; throws when one is
  // missing or holds no record.
  calibration_data(const tokenizer& tok, const calibration_options& opt);

  const std::vector<std::string>& files() const { return files_; }

  // Haystack tokens starting at record `start` of the shuffled order, exactly n of them.
  std::vector<int32_t> haystack(size_t start, int64_t n);

  // The stage-"layers" prompts: per dataset, the first layer_prompts records of the seeded order
  // (financial_qa: one question each of its first records).
  std::vector<std::pair<std::string, std::vector<int32_t>>> layer_prompts() const;

 private:
  std::vector<int32_t> layer_prompt(const doc& d, size_t instruction) const;

  const tokenizer& tok_;
  const calibration_options& opt_;
  std::vector<std::string> files_;
  std::vector<doc> docs_;
  std::vector<size_t> order_;
  std::map<size_t, std::vector<int32_t>> doc_tokens_;
};

}  // namespace kvhost::calib
