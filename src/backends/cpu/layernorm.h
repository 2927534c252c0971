// Layer normalisation over the last dimension (Ba, Kiros, Hinton 2016), eps = 1e-5 and the
// biased variance, as PyTorch's nn.LayerNorm. Rows are independent; rows run in parallel.
#pragma once

#include <cstdint>

namespace tessera::backends::cpu {

inline constexpr double kLayernormEps = 1e-5;

// inp, out: (N, C); weight, bias: (C); mean, rstd: (N), saved for backward.
// out = (inp - mean) · rstd · weight + bias with mean = E[inp], rstd = 1 / sqrt(Var[inp] + eps)
// per row. OVERWRITES out, mean and rstd.
template <typename T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* inp, const T* weight, const T* bias,
                       int64_t N, int64_t C);

// Backward of layernorm_forward. dout, inp: (N, C); weight: (C); mean, rstd: (N) from forward.
//   dinp (N, C)  ACCUMULATES (+=): the input is the residual stream, which collects the
//                gradients of every branch that reads it.
//   dweight (C), dbias (C)  ACCUMULATE.
// Deterministic for a fixed OpenMP thread count: each thread sums its fixed block of rows into
// its own slot of a scratch buffer, and the slots are added in thread order. The scratch is
// thread_local to the calling thread, so concurrent calls from different threads are safe.
template <typename T>
void layernorm_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight,
                        const T* mean, const T* rstd, int64_t N, int64_t C);

}  // namespace tessera::backends::cpu
