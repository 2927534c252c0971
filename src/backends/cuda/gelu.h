// GELU on the GPU, tanh approximation, the twin of backends/cpu/gelu.h:
//   gelu(x) = 0.5 · x · (1 + tanh(sqrt(2/pi) · (x + 0.044715 · x³))).
// fp32 forward and backward, plus a bf16-activation forward for mixed precision. All pointers
// are device memory; work is queued on `stream`.
#pragma once

#include <cstdint>

#include "backends/cuda/stream.h"

namespace tessera::backends::cuda {

// out, inp: (n). OVERWRITES out; out may alias inp.
void gelu_forward(float* out, const float* inp, int64_t n, Stream stream);

// dinp, inp, dout: (n). dinp = gelu'(inp) · dout, OVERWRITES (the MLP's hidden activation is not
// the residual stream). dinp may alias dout.
void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n, Stream stream);

// Mixed precision: out, inp bf16 (raw bits as uint16_t), (n); fp32 arithmetic, out rounded to
// nearest even once. OVERWRITES out; out may alias inp.
void gelu_forward_bf16(uint16_t* out, const uint16_t* inp, int64_t n, Stream stream);

}  // namespace tessera::backends::cuda
