// Decode-row kernels on the GPU, the twins of backends/cpu/attention_decode.h and the Backend's
// positional_rows: KV-cache append, attention of decode rows against the cache, and position
// embeddings at per-row positions. fp32; device pointers; work is queued on `stream`.
#pragma once

#include <cstdint>

#include "backends/cuda/stream.h"
#include "backends/kv_pages.h"

namespace tessera::backends::cuda {

// k_cache, v_cache: (n_blocks, block_size, C), paged by `pages` (backends/kv_pages.h, its block
// table on the device). qkv: (N, 3C) laid out [q | k | v] per row; slots, positions: (N) int32
// on the device.
// The cache row of (slots[i], positions[i]) = k of row i and v_cache alike, for every row i.
// OVERWRITES those cache rows only. Preconditions (not checked: the arrays live on the device):
// 0 <= positions[i] < pages.max_positions(); slots and table entries within the cache; no two rows
// name the same cache row.
void kv_append(float* k_cache, float* v_cache, const float* qkv, const KvPages& pages,
               const int32_t* slots, const int32_t* positions, int64_t N, int64_t C, Stream stream);

// out (N, C) row i, head h (columns h*HS.., HS = C / NH):
//   softmax(q_i,h · K_h^T / sqrt(HS)) V_h over the positions 0..positions[i] of slot slots[i],
// the same math as attention_forward's row positions[i] (Vaswani et al. 2017, eq. 1).
// OVERWRITES out. One block per (row, head); its arithmetic depends only on that row's q and its
// positions' keys and values, in position order, so a row gives the same bits in any batch
// (batch invariance) and whichever cache blocks hold them. Any context length: positions are
// taken in tiles of 1024 with the running-max rescaling of online softmax (Milakov & Gimelshein
// 2018), which is the plain two-pass softmax when the context fits one tile.
// Preconditions: C % NH == 0; N * NH < 2^31; the rows' positions filled by kv_append; out does
// not alias qkv or the caches.
void attention_decode(float* out, const float* qkv, const float* k_cache, const float* v_cache,
                      const KvPages& pages, const int32_t* slots, const int32_t* positions,
                      int64_t N, int64_t C, int64_t NH, Stream stream);

// out (N, C) row i += wpe[positions[i]] (ACCUMULATES onto the token embedding); wpe: (maxT, C),
// positions (N) int32 on the device, each in [0, maxT). One IEEE add per element, as on the CPU.
void positional_rows(float* out, const float* wpe, const int32_t* positions, int64_t N, int64_t C,
                     Stream stream);

}  // namespace tessera::backends::cuda
