// Placeholder until the eval tool lands: says so and exits non-zero.
#include <stdexcept>

#include "commands.hpp"

namespace kvtools {
int cmd_eval(int, char**) { throw std::runtime_error("'kvtrim eval' is not implemented yet"); }
}  // namespace kvtools
