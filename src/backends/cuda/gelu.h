// GELU on the GPU, tanh approximation, the twin of backends/cpu/gelu.h:
//   gelu(x) = 0.5 · x · (1 + tanh(sqrt(2/pi) · (x + 0.044715 · x³))).
// fp32 forward and backward, plus bf16-activation forms for mixed precision. All pointers
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

// bf16 activations (train.dtype: bf16), after the MLP's first GEMM: pre (n) fp32 in; pre_out =
// pre and out = gelu(pre), each rounded to bf16 once (raw bits). One pass in place of a GELU and
// two conversions. OVERWRITES out and pre_out.
void gelu_forward_split_bf16(uint16_t* out, uint16_t* pre_out, const float* pre, int64_t n,
                             Stream stream);

// gelu_backward on a bf16 saved input (read exactly); dinp, dout fp32. OVERWRITES dinp; dinp may
// alias dout.
void gelu_backward_bf16_input(float* dinp, const uint16_t* inp, const float* dout, int64_t n,
                              Stream stream);

}  // namespace tessera::backends::cuda
