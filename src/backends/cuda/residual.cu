// Element-wise residual kernels (grid-stride loops) and a two-stage, deterministic sum of squares.
// The backward of out = a + b is da = db = dout: callers use add_inplace; there is no kernel.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/residual.h"

namespace tessera::backends::cuda {
namespace {

constexpr int kThreads = 256;            // a power of two: the block tree below halves it
constexpr int64_t kMaxBlocks = 1 << 16;  // grid-stride beyond this

#define TESSERA_GRID_STRIDE(i, n)                                                        \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

__global__ void residual_forward_kernel(float* out, const float* a, const float* b, int64_t n) {
  TESSERA_GRID_STRIDE(i, n) out[i] = a[i] + b[i];
}

__global__ void residual_forward_bf16_kernel(uint16_t* out, const uint16_t* a, const uint16_t* b,
                                             int64_t n) {
  TESSERA_GRID_STRIDE(i, n) {
    const float sum =
        __bfloat162float(__ushort_as_bfloat16(a[i])) + __bfloat162float(__ushort_as_bfloat16(b[i]));
    out[i] = __bfloat16_as_ushort(__float2bfloat16_rn(sum));
  }
}

__global__ void add_inplace_kernel(float* acc, const float* x, int64_t n) {
  TESSERA_GRID_STRIDE(i, n) acc[i] += x[i];
}

__global__ void scale_inplace_kernel(float* x, float s, int64_t n) {
  TESSERA_GRID_STRIDE(i, n) x[i] *= s;
}

// Over the flat index i of (N, C): column i % C.
__global__ void add_bias_kernel(float* out, const float* bias, int64_t total, int64_t C) {
  TESSERA_GRID_STRIDE(i, total) out[i] += bias[i % C];
}

#undef TESSERA_GRID_STRIDE

// Sum of the kThreads values in `shared` (one per thread, already stored), by a fixed halving
// tree; the result is shared[0] after the call. Every thread of the block must call it.
__device__ void block_tree_sum(double* shared) {
  __syncthreads();
  for (int width = kThreads / 2; width > 0; width /= 2) {
    if (static_cast<int>(threadIdx.x) < width) shared[threadIdx.x] += shared[threadIdx.x + width];
    __syncthreads();
  }
}

// Stage 1: block b writes partials[b] = sum of x[i]² over its grid-stride share.
__global__ void sum_squares_partial_kernel(double* partials, const float* x, int64_t n) {
  __shared__ double shared[kThreads];
  double s = 0.0;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const double v = static_cast<double>(x[i]);
    s += v * v;
  }
  shared[threadIdx.x] = s;
  block_tree_sum(shared);
  if (threadIdx.x == 0) partials[blockIdx.x] = shared[0];
}

// Stage 2, one block: *out = sum of partials[0..count), count <= kSumSquaresPartials.
__global__ void sum_squares_final_kernel(double* out, const double* partials, int count) {
  __shared__ double shared[kThreads];
  double s = 0.0;
  for (int i = threadIdx.x; i < count; i += kThreads) s += partials[i];
  shared[threadIdx.x] = s;
  block_tree_sum(shared);
  if (threadIdx.x == 0) *out = shared[0];
}

unsigned int element_blocks(int64_t n) {
  return static_cast<unsigned int>(std::min((n + kThreads - 1) / kThreads, kMaxBlocks));
}

}  // namespace

void residual_forward(float* out, const float* a, const float* b, int64_t n, Stream stream) {
  TESSERA_ASSERT(n >= 0, "checking residual_forward's size");
  if (n == 0) return;
  residual_forward_kernel<<<element_blocks(n), kThreads, 0, stream>>>(out, a, b, n);
  TESSERA_CUDA_LAUNCH_CHECK("launching residual_forward");
}

void residual_forward_bf16(uint16_t* out, const uint16_t* a, const uint16_t* b, int64_t n,
                           Stream stream) {
  TESSERA_ASSERT(n >= 0, "checking residual_forward_bf16's size");
  if (n == 0) return;
  residual_forward_bf16_kernel<<<element_blocks(n), kThreads, 0, stream>>>(out, a, b, n);
  TESSERA_CUDA_LAUNCH_CHECK("launching residual_forward_bf16");
}

void add_inplace(float* acc, const float* x, int64_t n, Stream stream) {
  TESSERA_ASSERT(n >= 0, "checking add_inplace's size");
  if (n == 0) return;
  add_inplace_kernel<<<element_blocks(n), kThreads, 0, stream>>>(acc, x, n);
  TESSERA_CUDA_LAUNCH_CHECK("launching add_inplace");
}

void scale_inplace(float* x, float s, int64_t n, Stream stream) {
  TESSERA_ASSERT(n >= 0, "checking scale_inplace's size");
  if (n == 0) return;
  scale_inplace_kernel<<<element_blocks(n), kThreads, 0, stream>>>(x, s, n);
  TESSERA_CUDA_LAUNCH_CHECK("launching scale_inplace");
}

void add_bias(float* out, const float* bias, int64_t N, int64_t C, Stream stream) {
  TESSERA_ASSERT(N >= 0 && C >= 0, "checking add_bias's sizes");
  if (N == 0 || C == 0) return;
  add_bias_kernel<<<element_blocks(N * C), kThreads, 0, stream>>>(out, bias, N * C, C);
  TESSERA_CUDA_LAUNCH_CHECK("launching add_bias");
}

void sum_squares(double* out, double* partials, const float* x, int64_t n, Stream stream) {
  TESSERA_ASSERT(n >= 0, "checking sum_squares' size");
  // At least one block, so n = 0 still writes *out = 0.
  const int blocks =
      static_cast<int>(std::clamp<int64_t>((n + kThreads - 1) / kThreads, 1, kSumSquaresPartials));
  sum_squares_partial_kernel<<<blocks, kThreads, 0, stream>>>(partials, x, n);
  TESSERA_CUDA_LAUNCH_CHECK("launching sum_squares (partial sums)");
  sum_squares_final_kernel<<<1, kThreads, 0, stream>>>(out, partials, blocks);
  TESSERA_CUDA_LAUNCH_CHECK("launching sum_squares (final sum)");
}

}  // namespace tessera::backends::cuda
