// libFuzzer target: the eval records reader (samples.jsonl of kvtrim eval / kvtrim report) and
// what every resumed eval and report does with its records: summarize and the comparisons.
#include <cstddef>
#include <cstdint>
#include <stdexcept>

#include "fuzz_common.hpp"
#include "eval/eval_report.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = kvfuzz::write_input("records", data, size);
  try {
    const auto recs = kvhost::read_records(path);
    for (const auto& r : recs) (void)(r.value("id", "") + "|" + r.value("method", "") + "|" + r.value("budget", ""));
    (void)kvhost::summarize(recs);
    (void)kvhost::comparison_markdown(recs);
  } catch (const std::runtime_error&) {
  }
  return 0;
}
