// Placeholder until the calibrate tool lands: says so and exits non-zero.
#include <stdexcept>

#include "commands.hpp"

namespace kvtools {
int cmd_calibrate(int, char**) { throw std::runtime_error("'kvtrim calibrate' is not implemented yet"); }
}  // namespace kvtools
