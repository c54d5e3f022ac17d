#pragma once
// How a method whose budgets cascade (CAKE) reaches layers it compressed earlier. A later layer's
// preference can shrink an earlier layer's budget; compress_layer then re-trims that layer through
// the host's store and tells the host the new lengths, so the host frees the rows. Hosts of
// every other method never see it: compress_layer(layer, kv) without a store refuses a cascading
// method rather than leaving its cache over budget.
#include <vector>

#include "kvtrim/core/layer_kv.hpp"
#include "kvtrim/core/view.hpp"

namespace kvtrim {

template <class T>
class layer_store {
 public:
  virtual ~layer_store() = default;
  // Views of layer `layer`'s compacted rows from KV head `kv_head` on (an index among the heads
  // this sequence compresses): kv.keys / kv.values over one or more heads, each holding at least
  // its current length of rows (kv.length and kv.queries are ignored; kv.kv_head_offset must be
  // `kv_head`). One head per call is fine, for hosts whose heads live in separate allocations.
  virtual layer_kv<T> compacted(int layer, index_t kv_head) = 0;
  // Layer `layer` now keeps rows [0, lengths[h]) of each head h; the host may free the rest.
  virtual void resized(int layer, const std::vector<index_t>& lengths) = 0;
};

}  // namespace kvtrim
