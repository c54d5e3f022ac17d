// kvtrim: the command-line front of the library and the reference host.
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "args.hpp"
#include "commands.hpp"

namespace {

const char* kUsage =
    "usage: kvtrim <command> [options]   (kvtrim <command> --help for each)\n"
    "\n"
    "commands:\n"
    "  demo       needle-in-a-haystack on the default model: full cache vs compressed\n"
    "  generate   run a prompt through the reference host with any method and budget\n"
    "  methods    the registered methods, their parameters and papers (--json, --markdown)\n"
    "  budgets    per-layer / per-KV-head budgets a method gives for a prompt length\n"
    "  profile    import published CompressKV / HeadKV artefacts into a kvtrim profile\n"
    "  calibrate  produce a model's profile (semantic retrieval heads, retrieval-reasoning heads,\n"
    "             layer eviction errors) on the reference host\n"
    "  eval       accuracy, memory and speed of methods x budgets on a task, one prefill per sample\n"
    "  report     re-render an eval directory's tables and plots\n";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") ||
      !std::strcmp(argv[1], "help")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  try {
    if (cmd == "demo") return kvtools::cmd_demo(argc, argv);
    if (cmd == "generate") return kvtools::cmd_generate(argc, argv);
    if (cmd == "budgets") return kvtools::cmd_budgets(argc, argv);
    if (cmd == "profile") return kvtools::cmd_profile(argc, argv);
    if (cmd == "calibrate") return kvtools::cmd_calibrate(argc, argv);
    if (cmd == "eval") return kvtools::cmd_eval(argc, argv);
    if (cmd == "methods") return kvtools::cmd_methods(argc, argv);
    if (cmd == "report") return kvtools::cmd_report(argc, argv);
    std::fprintf(stderr, "kvtrim: unknown command '%s'\n%s", cmd.c_str(), kUsage);
    return 2;
  } catch (const kvtools::usage_error& e) {
    std::fprintf(stderr, "kvtrim %s: %s\n", cmd.c_str(), e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvtrim %s: %s\n", cmd.c_str(), e.what());
    return 1;
  }
}
