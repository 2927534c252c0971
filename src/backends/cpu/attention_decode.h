// Attention of decode rows against a paged KV cache (generation and serving). Forward only. The
// cache holds blocks of positions, and a block table says which blocks hold each slot's
// sequence; each row of a batch names its slot and position, so sequences at different positions
// (and chunks of one prompt) share one call.
#pragma once

#include <cstdint>

#include "backends/kv_pages.h"

namespace tessera::backends::cpu {

// k_cache, v_cache: (n_blocks, block_size, C), paged by `pages` (backends/kv_pages.h).
// qkv: (N, 3C) laid out [q | k | v] per row.
// The cache row of (slots[i], positions[i]) = k of row i, v_cache alike, for every row i.
// OVERWRITES those cache rows only. Preconditions: 0 <= positions[i] < pages.max_positions();
// slots and their table entries within the cache.
void kv_append(float* k_cache, float* v_cache, const float* qkv, const KvPages& pages,
               const int32_t* slots, const int32_t* positions, int64_t N, int64_t C);

// out (N, C) row i, head h (columns h*HS..): softmax(q_i,h · K_h^T / sqrt(HS)) V_h over the cache
// rows of positions 0..positions[i] of slot slots[i]: the same math as attention_forward's row
// positions[i]. OVERWRITES out. Rows are independent: a row's result never depends on the other
// rows of the call, so batching cannot change it, nor on which blocks hold its positions (the
// positions are visited in order whatever the table says). Threaded over (row, head) pairs;
// scratch is per thread (no allocation after the first call on a thread for a given context).
void attention_decode(float* out, const float* qkv, const float* k_cache, const float* v_cache,
                      const KvPages& pages, const int32_t* slots, const int32_t* positions,
                      int64_t N, int64_t C, int64_t NH);

}  // namespace tessera::backends::cpu
