#include "calibrate/trial_keys.hpp"

#include <cstdio>

namespace kvhost::calib {

std::string needle_trial_key(const std::string& stage, const std::string& needle_name, const std::string& fact,
                             int64_t length, int depth, int depths, int max_new_tokens, std::uint64_t seed) {
  return stage + "|" + needle_name + "|" + fnv_hex(fact) + "|len=" + std::to_string(length) +
         "|depth=" + std::to_string(depth) + "/" + std::to_string(depths) + "|new=" + std::to_string(max_new_tokens) +
         "|seed=" + std::to_string(seed);
}

std::string layer_settings_key(const std::string& head_sets, int64_t compressed_tokens, int window,
                               int64_t max_prompt_tokens, int max_new_tokens, std::uint64_t seed) {
  return "heads=" + fnv_hex(head_sets) + "|B=" + std::to_string(compressed_tokens) + "|w=" + std::to_string(window) +
         "|max=" + std::to_string(max_prompt_tokens) + "|new=" + std::to_string(max_new_tokens) +
         "|seed=" + std::to_string(seed);
}

std::string layer_settings_suffix(const std::string& pooling, int kernel, const std::string& error_at, double eps) {
  if (pooling == "max" && kernel == 7 && error_at == "attention" && eps == 1e-6) return "";
  char e[32];
  std::snprintf(e, sizeof e, "%.17g", eps);
  return "|pool=" + pooling + std::to_string(kernel) + "|at=" + error_at + "|eps=" + e;
}

std::string layer_trial_key(const std::string& dataset, int index, const std::vector<int32_t>& prompt,
                            const std::string& settings) {
  return "layers|" + dataset + "|" + std::to_string(index) + "|" +
         fnv_hex(std::string(reinterpret_cast<const char*>(prompt.data()), prompt.size() * sizeof(int32_t))) + "|" +
         settings;
}

}  // namespace kvhost::calib
