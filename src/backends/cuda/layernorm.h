// Layer normalisation on the GPU, the twin of backends/cpu/layernorm.h (same formula, eps = 1e-5,
// biased variance, same argument order and accumulation rules). fp32, plus a bf16-activation
// forward for mixed precision. All pointers are device memory; work is queued on `stream`.
#pragma once

#include <cstdint>

#include "backends/cuda/stream.h"

namespace tessera::backends::cuda {

// inp, out: (N, C); weight, bias: (C); mean, rstd: (N), saved for backward.
// out = (inp - mean) · rstd · weight + bias with mean = E[inp], rstd = 1 / sqrt(Var[inp] + eps)
// per row. OVERWRITES out, mean and rstd. One warp per row, two passes (mean, then squared
// deviations) as on the CPU.
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                       const float* bias, int64_t N, int64_t C, Stream stream);

// Backward of layernorm_forward. dout, inp: (N, C); weight: (C); mean, rstd: (N) from forward.
//   dinp (N, C)  ACCUMULATES (+=): the input is the residual stream.
//   dweight (C), dbias (C)  ACCUMULATE.
// With xhat = (x - mean) · rstd and g = dout · weight (derivation in backends/cpu/layernorm.cpp):
//   dinp_i += rstd · (g_i - mean_j g_j - xhat_i · mean_j(g_j · xhat_j)),
//   dweight += sum over rows of dout · xhat,  dbias += sum over rows of dout.
// Deterministic and atomic-free: the parameter gradients are summed per column by one block in a
// fixed order, so the same inputs give the same bits on every run.
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                        const float* inp, const float* weight, const float* mean, const float* rstd,
                        int64_t N, int64_t C, Stream stream);

// Mixed precision: inp and out are bf16 (raw bits as uint16_t), weight, bias, mean and rstd fp32;
// all arithmetic in fp32, out rounded to nearest even once. Shapes and rules as
// layernorm_forward. The fp32 mean and rstd serve the fp32 layernorm_backward on the bf16 input
// widened to fp32.
void layernorm_forward_bf16(uint16_t* out, float* mean, float* rstd, const uint16_t* inp,
                            const float* weight, const float* bias, int64_t N, int64_t C,
                            Stream stream);

// layernorm_backward on a bf16 saved input (raw bits, read exactly); everything else fp32 and as
// layernorm_backward.
void layernorm_backward_bf16_input(float* dinp, float* dweight, float* dbias, const float* dout,
                                   const uint16_t* inp, const float* weight, const float* mean,
                                   const float* rstd, int64_t N, int64_t C, Stream stream);

}  // namespace tessera::backends::cuda
