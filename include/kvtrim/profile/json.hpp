#pragma once
// kvtrim's JSON: the value type, its reader and its writer, for profiles (profile.hpp), imported
// artefacts (import.hpp) and the calibration accumulators' state (calibrate/). The tools' own
// files (eval records, data sets) use nlohmann-json instead.
#include "kvtrim/profile/json_read.hpp"
#include "kvtrim/profile/json_value.hpp"
#include "kvtrim/profile/json_write.hpp"
