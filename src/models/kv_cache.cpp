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
  k_ = model.backend().zeros({L, n_slots, maxT_, C_local});
  v_ = model.backend().zeros({L, n_slots, maxT_, C_local});
}

}  // namespace tessera::models
