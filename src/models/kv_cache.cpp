// KvCache storage.
#include "models/kv_cache.h"

#include "backends/backend.h"
#include "core/error.h"
#include "models/gpt.h"

namespace tessera::models {

KvCache::KvCache(const Gpt& model, int64_t n_slots)
    : n_slots_(n_slots), maxT_(model.config().max_seq_len) {
  TESSERA_ASSERT(n_slots >= 1, "sizing a KV cache for at least one sequence");
  const int64_t C_local = model.config().n_embd / model.tp_size();
  const int64_t L = model.config().n_layer;
  layer_stride_ = n_slots * maxT_ * C_local;
  n_layer_ = L;
  C_local_ = C_local;
  k_ = model.backend().zeros({L, n_slots, maxT_, C_local});
  v_ = model.backend().zeros({L, n_slots, maxT_, C_local});
}

void KvCache::copy_positions(backends::Backend& backend, int64_t from, int64_t to, int64_t begin,
                             int64_t end) {
  TESSERA_ASSERT(from >= 0 && from < n_slots_ && to >= 0 && to < n_slots_ && from != to &&
                     begin >= 0 && begin <= end && end <= maxT_,
                 "copying KV-cache positions between two slots, inside the context");
  if (begin == end) return;
  const size_t bytes = static_cast<size_t>((end - begin) * C_local_) * sizeof(float);
  for (int64_t layer = 0; layer < n_layer_; ++layer) {
    const int64_t src = (from * maxT_ + begin) * C_local_, dst = (to * maxT_ + begin) * C_local_;
    backend.copy(k(layer) + dst, k(layer) + src, bytes);
    backend.copy(v(layer) + dst, v(layer) + src, bytes);
  }
}

}  // namespace tessera::models
