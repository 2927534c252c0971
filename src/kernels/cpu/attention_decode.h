// Attention for one new query position against a KV cache (generation). Forward only.
#pragma once

#include <cstdint>

namespace tessera::kernels::cpu {

// q (C) for one position; k_cache, v_cache (maxT, C) rows 0..n_ctx-1 filled, head h at columns
// h*HS..; out (C) OVERWRITTEN with softmax(q k^T / sqrt(HS)) v per head. scratch: n_ctx floats.
void attention_decode(float* out, float* scratch, const float* q, const float* k_cache,
                      const float* v_cache, int64_t n_ctx, int64_t C, int64_t NH);

}  // namespace tessera::kernels::cpu
