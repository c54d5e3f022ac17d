#pragma once
// Head selector: every query head of the layer scores tokens (SnapKV, PyramidKV, Ada-KV, CAKE,
// HeadKV).
#include <vector>

#include "kvtrim/core/error.hpp"
#include "kvtrim/core/shape.hpp"

namespace kvtrim {

struct all_heads {
  std::vector<int> heads(int layer, const model_shape& shape) const {
    shape.validate();
    detail::require(layer >= 0 && layer < shape.layers, "all_heads: layer ", layer, " outside [0, ",
                    shape.layers, ")");
    std::vector<int> out(static_cast<size_t>(shape.q_heads));
    for (int h = 0; h < shape.q_heads; ++h) out[static_cast<size_t>(h)] = h;
    return out;
  }
};

}  // namespace kvtrim
