// Attention of decode rows against a KV cache (generation and serving). Forward only. A cache
// holds n_slots sequences of up to maxT positions; each row of a batch names its slot and
// position, so sequences at different positions (and chunks of one prompt) share one call.
#pragma once

#include <cstdint>

namespace tessera::backends::cpu {

// k_cache, v_cache: (n_slots, maxT, C). qkv: (N, 3C) laid out [q | k | v] per row.
// k_cache[slots[i], positions[i]] = k of row i and v_cache alike, for every row i. OVERWRITES
// those cache rows only. Preconditions: 0 <= positions[i] < maxT; slots within the cache.
void kv_append(float* k_cache, float* v_cache, const float* qkv, const int32_t* slots,
               const int32_t* positions, int64_t N, int64_t maxT, int64_t C);

// out (N, C) row i, head h (columns h*HS..): softmax(q_i,h · K_h^T / sqrt(HS)) V_h over the cache
// rows 0..positions[i] of slot slots[i]: the same math as attention_forward's row positions[i].
// OVERWRITES out. Rows are independent: a row's result never depends on the other rows of the
// call, so batching cannot change it. Threaded over rows; scratch is per thread (no allocation
// after the first call on a thread for a given maxT).
void attention_decode(float* out, const float* qkv, const float* k_cache, const float* v_cache,
                      const int32_t* slots, const int32_t* positions, int64_t N, int64_t maxT,
                      int64_t C, int64_t NH);

}  // namespace tessera::backends::cpu
