// Small device ops the Backend interface needs that no kernel family owns: a constant fill, a
// device-to-device copy, fp32 <-> bf16 conversions and the masked loss sum behind a step's mean
// loss. fp32; device
// pointers; work is queued on `stream` and never waits for it.
#pragma once

#include <cstddef>
#include <cstdint>

#include "backends/cuda/stream.h"

namespace tessera::backends::cuda {

// x (n) = value everywhere. OVERWRITES x.
void fill(float* x, float value, int64_t n, Stream stream);

// `bytes` from src to dst, both device memory. dst == src is a no-op; other overlaps are not
// allowed (cudaMemcpyAsync's rule).
void copy_device_to_device(void* dst, const void* src, size_t bytes, Stream stream);

// out (n) = in rounded to bf16 (raw bits): nearest, ties to even; NaN stays NaN. The bits
// core::to_bf16 gives for every non-NaN input (the mixed-precision GEMMs' operands).
void to_bf16(uint16_t* out, const float* in, int64_t n, Stream stream);

// out (n) = the bf16 values in (n) (raw bits) as floats, exactly (core::from_bf16).
void from_bf16(float* out, const uint16_t* in, int64_t n, Stream stream);

// *sum = Σ losses[n] over the rows with targets[n] >= 0, in double, and *count = the number of
// such rows; losses, targets: (N). sum and count are one device double and one device int64,
// OVERWRITTEN (0 and 0 when N == 0); the result stays on the device.
// Deterministic: one block, thread t adds rows t, t + 256, ... in order, then a fixed halving
// tree, so the same inputs give the same bits on every run (not the CPU's sequential order:
// they agree to double rounding, ~1e-16 relative per row).
void sum_losses(double* sum, int64_t* count, const float* losses, const int32_t* targets, int64_t N,
                Stream stream);

}  // namespace tessera::backends::cuda
