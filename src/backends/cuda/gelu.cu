// GELU kernels: grid-stride element loops. As on the CPU, 0.5 · (1 + tanh(u)) is computed as
// sigmoid(2u) = 1 / (1 + exp(-2u)), with the accurate expf (this target builds without fast math).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/gelu.h"

namespace tessera::backends::cuda {
namespace {

constexpr float kSqrt2OverPi = 0.79788456080286535588f;  // sqrt(2 / pi)
constexpr float kCubic = 0.044715f;
constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 1 << 16;  // grid-stride beyond this

// sigmoid(2u) = 0.5 · (1 + tanh(u)) with u = sqrt(2/pi) · (x + 0.044715 x³); also du/dx.
// exp(-2u) overflows to inf for very negative x, giving exactly 0, and underflows to 0 for very
// positive x, giving exactly 1: no NaN anywhere on finite input.
__device__ __forceinline__ float half_one_plus_tanh(float x, float* du_dx) {
  const float x2 = x * x;
  const float u = kSqrt2OverPi * (x + kCubic * x2 * x);
  *du_dx = kSqrt2OverPi * (1.0f + 3.0f * kCubic * x2);
  return 1.0f / (1.0f + expf(-2.0f * u));
}

__device__ __forceinline__ float gelu(float x) {
  float du_dx;
  return x * half_one_plus_tanh(x, &du_dx);
}

__global__ void gelu_forward_kernel(float* out, const float* inp, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = gelu(inp[i]);
  }
}

__global__ void gelu_forward_bf16_kernel(__nv_bfloat16* out, const __nv_bfloat16* inp, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = __float2bfloat16_rn(gelu(__bfloat162float(inp[i])));
  }
}

// With s = sigmoid(2u) and gelu = x · s:
//   d gelu / dx = s + x · 2 s (1 - s) · du/dx,  du/dx = sqrt(2/pi) · (1 + 3 · 0.044715 · x²).
__global__ void gelu_backward_kernel(float* dinp, const float* inp, const float* dout, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float x = inp[i];
    float du_dx;
    const float s = half_one_plus_tanh(x, &du_dx);
    const float grad = s + 2.0f * x * s * (1.0f - s) * du_dx;
    dinp[i] = dout[i] * grad;
  }
}

// bf16 activations: the GEMM's fp32 pre-activation in, both it and its GELU out as bf16, each
// rounded once.
__global__ void gelu_forward_split_bf16_kernel(__nv_bfloat16* out, __nv_bfloat16* pre_out,
                                               const float* pre, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float x = pre[i];
    pre_out[i] = __float2bfloat16_rn(x);
    out[i] = __float2bfloat16_rn(gelu(x));
  }
}

// The backward above on a bf16 saved input (read exactly).
__global__ void gelu_backward_bf16_input_kernel(float* dinp, const __nv_bfloat16* inp,
                                                const float* dout, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float x = __bfloat162float(inp[i]);
    float du_dx;
    const float s = half_one_plus_tanh(x, &du_dx);
    const float grad = s + 2.0f * x * s * (1.0f - s) * du_dx;
    dinp[i] = dout[i] * grad;
  }
}

unsigned int element_blocks(int64_t n) {
  return static_cast<unsigned int>(std::min((n + kThreads - 1) / kThreads, kMaxBlocks));
}

}  // namespace

void gelu_forward(float* out, const float* inp, int64_t n, Stream stream) {
  TESSERA_ASSERT(n >= 0, "checking gelu_forward's size");
  if (n == 0) return;
  gelu_forward_kernel<<<element_blocks(n), kThreads, 0, stream>>>(out, inp, n);
  TESSERA_CUDA_LAUNCH_CHECK("launching gelu_forward");
}

void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n, Stream stream) {
  TESSERA_ASSERT(n >= 0, "checking gelu_backward's size");
  if (n == 0) return;
  gelu_backward_kernel<<<element_blocks(n), kThreads, 0, stream>>>(dinp, inp, dout, n);
  TESSERA_CUDA_LAUNCH_CHECK("launching gelu_backward");
}

void gelu_forward_bf16(uint16_t* out, const uint16_t* inp, int64_t n, Stream stream) {
  TESSERA_ASSERT(n >= 0, "checking gelu_forward_bf16's size");
  if (n == 0) return;
  gelu_forward_bf16_kernel<<<element_blocks(n), kThreads, 0, stream>>>(
      reinterpret_cast<__nv_bfloat16*>(out), reinterpret_cast<const __nv_bfloat16*>(inp), n);
  TESSERA_CUDA_LAUNCH_CHECK("launching gelu_forward_bf16");
}

void gelu_forward_split_bf16(uint16_t* out, uint16_t* pre_out, const float* pre, int64_t n,
                             Stream stream) {
  TESSERA_ASSERT(n >= 0, "checking gelu_forward_split_bf16's size");
  if (n == 0) return;
  gelu_forward_split_bf16_kernel<<<element_blocks(n), kThreads, 0, stream>>>(
      reinterpret_cast<__nv_bfloat16*>(out), reinterpret_cast<__nv_bfloat16*>(pre_out), pre, n);
  TESSERA_CUDA_LAUNCH_CHECK("launching gelu_forward_split_bf16");
}

void gelu_backward_bf16_input(float* dinp, const uint16_t* inp, const float* dout, int64_t n,
                              Stream stream) {
  TESSERA_ASSERT(n >= 0, "checking gelu_backward_bf16_input's size");
  if (n == 0) return;
  gelu_backward_bf16_input_kernel<<<element_blocks(n), kThreads, 0, stream>>>(
      dinp, reinterpret_cast<const __nv_bfloat16*>(inp), dout, n);
  TESSERA_CUDA_LAUNCH_CHECK("launching gelu_backward_bf16_input");
}

}  // namespace tessera::backends::cuda
