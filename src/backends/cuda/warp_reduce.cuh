// Warp and block reductions of one float per thread, shared by the CUDA kernels. Device code
// only, so that the emulated tests (tests/unit/emulated_cuda.h) compile it for the host with the
// kernels that use it.
//
// Every lane (thread) ends with the same bits: at each butterfly step the two partners combine
// the same pair of values, and a + b == b + a, max(a, b) == max(b, a) exactly.
#pragma once

#include <cmath>

namespace tessera::backends::cuda {
// Internal linkage: the CUDA library and the emulated tests both compile these, and a test binary
// links both.
namespace {

constexpr int kWarp = 32;

struct MaxOp {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct SumOp {
  __device__ float operator()(float a, float b) const { return a + b; }
};

// Over the 32 lanes of a full warp; every lane must call it.
template <typename Op>
__device__ __forceinline__ float warp_reduce(float v, Op op) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    v = op(v, __shfl_xor_sync(0xffffffffu, v, offset));
  }
  return v;
}
__device__ __forceinline__ float warp_sum(float v) { return warp_reduce(v, SumOp{}); }
__device__ __forceinline__ float warp_max(float v) { return warp_reduce(v, MaxOp{}); }

// Over the whole block of kWarps full warps, in a fixed order; every thread gets the result.
// `scratch` holds kWarps floats of shared memory. The leading barrier lets back-to-back calls
// reuse scratch, and makes every shared write made before the call visible after it. Must be
// called by all threads of the block.
template <int kWarps, typename Op>
__device__ float block_reduce(float v, Op op, float* scratch) {
  static_assert(kWarps >= 1 && kWarps <= kWarp, "block_reduce: 1 to 32 warps");
  v = warp_reduce(v, op);
  __syncthreads();
  if (threadIdx.x % kWarp == 0) scratch[threadIdx.x / kWarp] = v;
  __syncthreads();
  float r = scratch[0];
  for (int w = 1; w < kWarps; ++w) r = op(r, scratch[w]);
  return r;
}

}  // namespace
}  // namespace tessera::backends::cuda
