// Element-wise helpers on flat device buffers, the twin of backends/cpu/residual.h: residual add,
// in-place accumulate and scale, bias broadcast, and the sum of squares behind global grad-norm
// clipping. fp32 (and a bf16 residual add); work is queued on `stream`.
#pragma once

#include <cstdint>

#include "backends/cuda/stream.h"

namespace tessera::backends::cuda {

// out = a + b over n elements. OVERWRITES out; out may alias a or b.
void residual_forward(float* out, const float* a, const float* b, int64_t n, Stream stream);

// Mixed precision: out = a + b with a, b, out bf16 (raw bits as uint16_t): the fp32 sum of the
// exact values rounded to nearest even once (the bits the CPU's widen, add, round give). OVERWRITES
// out; out may alias a or b.
void residual_forward_bf16(uint16_t* out, const uint16_t* a, const uint16_t* b, int64_t n,
                           Stream stream);

// acc += x over n elements (e.g. a residual branch's gradient into the stream's).
void add_inplace(float* acc, const float* x, int64_t n, Stream stream);

// x *= s over n elements (grad clipping, averaging). s is a host value.
void scale_inplace(float* x, float s, int64_t n, Stream stream);

// out (N, C) += bias (C) broadcast over rows: the bias of a row-parallel linear, added once after
// its partial outputs were summed over tp.
void add_bias(float* out, const float* bias, int64_t N, int64_t C, Stream stream);

// Doubles of scratch sum_squares needs in `partials`.
inline constexpr int64_t kSumSquaresPartials = 256;

// *out = sum of x[i]² over n elements, accumulated in double. out: one device double, OVERWRITTEN
// (the result stays on the device: no host synchronisation). partials: device scratch of
// kSumSquaresPartials doubles, overwritten; calls that may run concurrently need their own.
// Deterministic: a fixed number of blocks (a function of n only) each sum a fixed grid-stride
// share and a fixed-shape tree, then one block adds the partials in a fixed order.
void sum_squares(double* out, double* partials, const float* x, int64_t n, Stream stream);

}  // namespace tessera::backends::cuda
