#pragma once
// The keys that name trials in resume files. They must stay byte for byte as they are: resume
// directories written by earlier runs hold them, and a changed key silently reruns the trial.
#include <cstdint>
#include <string>
#include <vector>

#include "common/fingerprint.hpp"

namespace kvhost::calib {

using kvhost::fnv_hex;

// A needle-stage trial: "<stage>|<needle>|<fnv(fact)>|len=..|depth=i/n|new=..|seed=..".
std::string needle_trial_key(const std::string& stage, const std::string& needle_name, const std::string& fact,
                             int64_t length, int depth, int depths, int max_new_tokens, std::uint64_t seed);

// Stage "layers": the settings every sample's key ends with (the heads that choose the compressed
// rows are fingerprinted, so other heads rerun the samples), and one sample's key.
std::string layer_settings_key(const std::string& head_sets, int64_t compressed_tokens, int window,
                               int64_t max_prompt_tokens, int max_new_tokens, std::uint64_t seed);
// What stage "layers"' settings add beyond layer_settings_key: empty for kvtrim's earlier
// settings (pooling max, kernel 7, error before o_proj, eps 1e-6), whose keys stay as older
// resume directories hold them; otherwise "|pool=<pooling><kernel>|at=<where>|eps=<eps>", so a
// sample is never reused across them.
std::string layer_settings_suffix(const std::string& pooling, int kernel, const std::string& error_at, double eps);
std::string layer_trial_key(const std::string& dataset, int index, const std::vector<int32_t>& prompt,
                            const std::string& settings);

}  // namespace kvhost::calib
