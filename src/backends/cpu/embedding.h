// Token and position embeddings. The token table is vocab-parallel ready: a rank holds rows
// [vocab_start, vocab_start + V_local) of the (padded) vocabulary and answers only for those.
#pragma once

#include <cstdint>

namespace tessera::backends::cpu {

// out: (N, C); tokens: (N); wte_local: (V_local, C).
// out[n] = wte_local[tokens[n] - vocab_start] when vocab_start <= tokens[n] < vocab_start +
// V_local, else zeros (another rank's row; a reduce over tp completes it). OVERWRITES out.
template <typename T>
void embedding_forward(T* out, const int32_t* tokens, const T* wte_local, int64_t N, int64_t C,
                       int64_t vocab_start, int64_t V_local);

// Backward of embedding_forward. dout: (N, C); tokens: (N); dwte_local: (V_local, C).
// dwte_local[tokens[n] - vocab_start] += dout[n] for in-range tokens only (ACCUMULATES).
// Race-free and deterministic: threads own disjoint column blocks and walk n in order.
template <typename T>
void embedding_backward(T* dwte_local, const T* dout, const int32_t* tokens, int64_t N, int64_t C,
                        int64_t vocab_start, int64_t V_local);

// out: (B, T, C); wpe: (maxT, C) with T <= maxT. out[b, t] += wpe[t] (ACCUMULATES onto the token
// embedding already in out).
template <typename T>
void positional_forward(T* out, const T* wpe, int64_t B, int64_t Tlen, int64_t C);

// dout: (B, T, C); dwpe: (maxT, C). dwpe[t] += sum over b of dout[b, t] (ACCUMULATES; rows
// t >= T untouched).
template <typename T>
void positional_backward(T* dwpe, const T* dout, int64_t B, int64_t Tlen, int64_t C);

}  // namespace tessera::backends::cpu
