// GELU activation, tanh approximation (Hendrycks & Gimpel 2016; PyTorch gelu approximate='tanh'):
//   gelu(x) = 0.5 · x · (1 + tanh(sqrt(2/pi) · (x + 0.044715 · x³))).
#pragma once

#include <cstdint>

namespace tessera::backends::cpu {

// out, inp: (n). OVERWRITES out; out may alias inp.
template <typename T>
void gelu_forward(T* out, const T* inp, int64_t n);

// dinp, inp, dout: (n). dinp = gelu'(inp) · dout, OVERWRITES (the MLP's hidden activation is not
// the residual stream). dinp may alias dout.
template <typename T>
void gelu_backward(T* dinp, const T* inp, const T* dout, int64_t n);

}  // namespace tessera::backends::cpu
