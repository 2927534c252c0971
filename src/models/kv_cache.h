// KvCache: keys and values of this rank's heads for up to n_slots sequences of up to maxT
// positions, per layer: k, v (L, n_slots, maxT, C_local). A sequence owns one slot from when it
// joins a decode batch until it leaves; which slots are in use is the caller's bookkeeping
// (generate/ and serve/ schedulers), so the cache is plain storage on the backend's device.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace tessera::backends {
class Backend;
}

namespace tessera::models {

class Gpt;

class KvCache {
 public:
  // Sized for `model` (its layers, context and this rank's heads). Allocates once.
  KvCache(const Gpt& model, int64_t n_slots);
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

  float* k(int64_t layer) const { return k_.f32() + layer * layer_stride_; }
  float* v(int64_t layer) const { return v_.f32() + layer * layer_stride_; }
  int64_t n_slots() const { return n_slots_; }
  int64_t max_seq() const { return maxT_; }
  int64_t bytes() const { return static_cast<int64_t>(k_.bytes() + v_.bytes()); }
  // Copies the keys and values of positions [begin, end) of slot `from` into slot `to`, every
  // layer (a shared prefix: the same tokens at the same positions give the same keys and values).
  void copy_positions(backends::Backend& backend, int64_t from, int64_t to, int64_t begin,
                      int64_t end);

 private:
  int64_t n_slots_, maxT_, layer_stride_, n_layer_, C_local_;
  core::Tensor k_, v_;
};

}  // namespace tessera::models
