// Token and position embeddings on the GPU, the twin of backends/cpu/embedding.h. The token table
// is vocab-parallel: a rank holds rows [vocab_start, vocab_start + V_local) of the padded
// vocabulary and answers only for those. fp32; device pointers; work is queued on `stream`.
#pragma once

#include <cstdint>

#include "backends/cuda/stream.h"

namespace tessera::backends::cuda {

// out: (N, C); tokens: (N) int32 on the device; wte_local: (V_local, C).
// out[n] = wte_local[tokens[n] - vocab_start] when vocab_start <= tokens[n] < vocab_start +
// V_local, else zeros (another rank's row; a reduce over tp completes it). OVERWRITES out.
void embedding_forward(float* out, const int32_t* tokens, const float* wte_local, int64_t N,
                       int64_t C, int64_t vocab_start, int64_t V_local, Stream stream);

// Backward of embedding_forward. dout: (N, C); tokens: (N); dwte_local: (V_local, C).
// dwte_local[tokens[n] - vocab_start] += dout[n] for in-range tokens only (ACCUMULATES).
// Deterministic, no atomics: one thread owns each column c and adds the rows n = 0..N-1 in order,
// so a repeated token's contributions are summed in the same order as on the CPU (the result
// equals the CPU twin's bit for bit). Parallel over C only: N sequential steps per thread.
void embedding_backward(float* dwte_local, const float* dout, const int32_t* tokens, int64_t N,
                        int64_t C, int64_t vocab_start, int64_t V_local, Stream stream);

// out: (B, T, C); wpe: (maxT, C) with T <= maxT. out[b, t] += wpe[t] (ACCUMULATES onto the token
// embedding already in out).
void positional_forward(float* out, const float* wpe, int64_t B, int64_t Tlen, int64_t C,
                        Stream stream);

// dout: (B, T, C); dwpe: (maxT, C). dwpe[t] += sum over b of dout[b, t] (ACCUMULATES; rows
// t >= T untouched). One thread per (t, c), adding b = 0..B-1 in order: deterministic.
void positional_backward(float* dwpe, const float* dout, int64_t B, int64_t Tlen, int64_t C,
                         Stream stream);

}  // namespace tessera::backends::cuda
