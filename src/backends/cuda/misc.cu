// Fill and bf16 conversion (grid-stride), device-to-device copy, and the one-block deterministic
// masked loss sum.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/misc.h"

namespace tessera::backends::cuda {
namespace {

constexpr int kThreads = 256;            // a power of two: sum_losses' tree halves it
constexpr int64_t kMaxBlocks = 1 << 16;  // grid-stride beyond this

// Blocks of kThreads for a grid-stride loop over n > 0 elements.
unsigned int grid_stride_blocks(int64_t n) {
  return static_cast<unsigned int>(std::min((n + kThreads - 1) / kThreads, kMaxBlocks));
}

__global__ void fill_kernel(float* x, float value, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    x[i] = value;
  }
}

__global__ void to_bf16_kernel(uint16_t* out, const float* in, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = __bfloat16_as_ushort(__float2bfloat16_rn(in[i]));
  }
}

__global__ void from_bf16_kernel(float* out, const uint16_t* in, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = __bfloat162float(__ushort_as_bfloat16(in[i]));
  }
}

// One block of kThreads: thread t sums rows t, t + kThreads, ... in order; then a halving tree.
__global__ void sum_losses_kernel(double* sum, int64_t* count, const float* losses,
                                  const int32_t* targets, int64_t N) {
  __shared__ double shared_sum[kThreads];
  __shared__ int64_t shared_count[kThreads];
  double s = 0.0;
  int64_t c = 0;
  for (int64_t n = threadIdx.x; n < N; n += kThreads) {
    if (targets[n] >= 0) {
      s += static_cast<double>(losses[n]);
      ++c;
    }
  }
  shared_sum[threadIdx.x] = s;
  shared_count[threadIdx.x] = c;
  __syncthreads();
  for (int width = kThreads / 2; width > 0; width /= 2) {
    if (static_cast<int>(threadIdx.x) < width) {
      shared_sum[threadIdx.x] += shared_sum[threadIdx.x + width];
      shared_count[threadIdx.x] += shared_count[threadIdx.x + width];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    *sum = shared_sum[0];
    *count = shared_count[0];
  }
}

}  // namespace

void fill(float* x, float value, int64_t n, Stream stream) {
  TESSERA_ASSERT(n >= 0, "checking fill's size");
  if (n == 0) return;
  fill_kernel<<<grid_stride_blocks(n), kThreads, 0, stream>>>(x, value, n);
  TESSERA_CUDA_LAUNCH_CHECK("launching fill");
}

void to_bf16(uint16_t* out, const float* in, int64_t n, Stream stream) {
  TESSERA_ASSERT(n >= 0, "checking to_bf16's size");
  if (n == 0) return;
  to_bf16_kernel<<<grid_stride_blocks(n), kThreads, 0, stream>>>(out, in, n);
  TESSERA_CUDA_LAUNCH_CHECK("launching to_bf16");
}

void from_bf16(float* out, const uint16_t* in, int64_t n, Stream stream) {
  TESSERA_ASSERT(n >= 0, "checking from_bf16's size");
  if (n == 0) return;
  from_bf16_kernel<<<grid_stride_blocks(n), kThreads, 0, stream>>>(out, in, n);
  TESSERA_CUDA_LAUNCH_CHECK("launching from_bf16");
}

void copy_device_to_device(void* dst, const void* src, size_t bytes, Stream stream) {
  if (bytes == 0 || dst == src) return;
  TESSERA_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream),
                     "queuing a device-to-device copy");
}

void sum_losses(double* sum, int64_t* count, const float* losses, const int32_t* targets, int64_t N,
                Stream stream) {
  TESSERA_ASSERT(N >= 0, "checking sum_losses' size");
  // Launched for N = 0 too, so the outputs are always written.
  sum_losses_kernel<<<1, kThreads, 0, stream>>>(sum, count, losses, targets, N);
  TESSERA_CUDA_LAUNCH_CHECK("launching sum_losses");
}

}  // namespace tessera::backends::cuda
