// Element-wise helpers on flat buffers: residual add, in-place accumulate and scale, and the
// sum of squares used by global grad-norm clipping.
#pragma once

#include <cstdint>

namespace tessera::backends::cpu {

// out = a + b over n elements. OVERWRITES out; out may alias a or b.
template <typename T>
void residual_forward(T* out, const T* a, const T* b, int64_t n);

// acc += x over n elements (e.g. a residual branch's gradient into the stream's).
template <typename T>
void add_inplace(T* acc, const T* x, int64_t n);

// x *= s over n elements (grad clipping, averaging).
template <typename T>
void scale_inplace(T* x, T s, int64_t n);

// sum of x[i]² accumulated in double. Deterministic for a fixed thread count (per-thread partial
// sums added in thread order).
// out (N, C) += bias (C) broadcast over rows: the bias of a row-parallel linear, added once
// after its partial outputs were summed over tp.
template <typename T>
void add_bias(T* out, const T* bias, int64_t N, int64_t C);

template <typename T>
double sum_squares(const T* x, int64_t n);

}  // namespace tessera::backends::cpu
