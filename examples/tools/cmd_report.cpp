// Placeholder until the report tool lands: says so and exits non-zero.
#include <stdexcept>

#include "commands.hpp"

namespace kvtools {
int cmd_report(int, char**) { throw std::runtime_error("'kvtrim report' is not implemented yet"); }
}  // namespace kvtools
