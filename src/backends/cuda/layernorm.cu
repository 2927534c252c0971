// Layer normalisation kernels: one warp per row for the forward and the input gradient, one block
// per 32 columns for the parameter gradients, summed in a fixed order (no atomics: deterministic).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/layernorm.h"
#include "backends/cuda/warp_reduce.cuh"

namespace tessera::backends::cuda {
namespace {

constexpr float kEps =
    1e-5f;  // backends/cpu/layernorm.h kLayernormEps, in float as the CPU uses it
constexpr int kRowsPerBlock = 8;  // warps per block, one row each
constexpr int kRowThreads = kWarp * kRowsPerBlock;
constexpr int64_t kMaxBlocks = 1 << 16;  // row loops are grid-stride beyond this
// Parameter-gradient blocks: kColTile columns (one per lane, so a warp reads 128 contiguous
// bytes of a row) times kRowLanes row phases; thread (c, r) sums rows r, r + kRowLanes, ...
constexpr int kColTile = 32;
constexpr int kRowLanes = 16;

__device__ __forceinline__ float load(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float load(const __nv_bfloat16* p, int64_t i) {
  return __bfloat162float(p[i]);
}
__device__ __forceinline__ void store(float* p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void store(__nv_bfloat16* p, int64_t i, float v) {
  p[i] = __float2bfloat16_rn(v);
}

// Row loop of a warp: rows are uniform across a warp, so every lane reaches each warp_sum.
template <typename Tio>
__global__ void layernorm_forward_kernel(Tio* out, float* mean, float* rstd, const Tio* inp,
                                         const float* weight, const float* bias, int64_t N,
                                         int64_t C) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps_in_grid = static_cast<int64_t>(gridDim.x) * kRowsPerBlock;
  for (int64_t n = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp; n < N;
       n += warps_in_grid) {
    const Tio* x = inp + n * C;
    float sum = 0.0f;
    for (int64_t c = lane; c < C; c += kWarp) sum += load(x, c);
    const float m = warp_sum(sum) / static_cast<float>(C);
    // Second pass over squared deviations: no cancellation as in E[x²] - E[x]².
    float sq = 0.0f;
    for (int64_t c = lane; c < C; c += kWarp) {
      const float d = load(x, c) - m;
      sq += d * d;
    }
    const float s = 1.0f / sqrtf(warp_sum(sq) / static_cast<float>(C) + kEps);
    Tio* y = out + n * C;
    for (int64_t c = lane; c < C; c += kWarp) {
      store(y, c, (load(x, c) - m) * s * weight[c] + bias[c]);
    }
    if (lane == 0) {
      mean[n] = m;
      rstd[n] = s;
    }
  }
}

// dinp += rstd · (g - mean(g) - xhat · mean(g · xhat)), g = dout · weight; one warp per row.
// Tin: the saved input's type (float, or __nv_bfloat16 read exactly).
template <typename Tin>
__global__ void layernorm_backward_input_kernel(float* dinp, const float* dout, const Tin* inp,
                                                const float* weight, const float* mean,
                                                const float* rstd, int64_t N, int64_t C) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps_in_grid = static_cast<int64_t>(gridDim.x) * kRowsPerBlock;
  for (int64_t n = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp; n < N;
       n += warps_in_grid) {
    const Tin* x = inp + n * C;
    const float* dy = dout + n * C;
    float* dx = dinp + n * C;
    const float m = mean[n];
    const float s = rstd[n];
    float g_sum = 0.0f;
    float gx_sum = 0.0f;
    for (int64_t c = lane; c < C; c += kWarp) {
      const float xhat = (load(x, c) - m) * s;
      const float g = dy[c] * weight[c];
      g_sum += g;
      gx_sum += g * xhat;
    }
    const float g_mean = warp_sum(g_sum) / static_cast<float>(C);
    const float gx_mean = warp_sum(gx_sum) / static_cast<float>(C);
    for (int64_t c = lane; c < C; c += kWarp) {
      const float xhat = (load(x, c) - m) * s;
      dx[c] += s * (dy[c] * weight[c] - g_mean - xhat * gx_mean);
    }
  }
}

// dweight[c] += sum_n dout[n, c] · xhat[n, c], dbias[c] += sum_n dout[n, c]. Block (kColTile,
// kRowLanes) owns columns [blockIdx.x · kColTile, +kColTile): each thread sums its row phase in
// row order, then row phase 0 adds the kRowLanes partials in order. No other block touches these
// columns, so there are no atomics and the result is the same on every run.
template <typename Tin>
__global__ void layernorm_backward_params_kernel(float* dweight, float* dbias, const float* dout,
                                                 const Tin* inp, const float* mean,
                                                 const float* rstd, int64_t N, int64_t C) {
  __shared__ float dw_part[kRowLanes][kColTile];
  __shared__ float db_part[kRowLanes][kColTile];
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kColTile + threadIdx.x;
  float dw = 0.0f;
  float db = 0.0f;
  if (c < C) {
    for (int64_t n = threadIdx.y; n < N; n += kRowLanes) {
      const float dy = dout[n * C + c];
      const float xhat = (load(inp, n * C + c) - mean[n]) * rstd[n];
      dw += dy * xhat;
      db += dy;
    }
  }
  dw_part[threadIdx.y][threadIdx.x] = dw;
  db_part[threadIdx.y][threadIdx.x] = db;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    float dw_total = 0.0f;
    float db_total = 0.0f;
    for (int r = 0; r < kRowLanes; ++r) {
      dw_total += dw_part[r][threadIdx.x];
      db_total += db_part[r][threadIdx.x];
    }
    dweight[c] += dw_total;
    dbias[c] += db_total;
  }
}

unsigned int row_blocks(int64_t N) {
  return static_cast<unsigned int>(std::min((N + kRowsPerBlock - 1) / kRowsPerBlock, kMaxBlocks));
}

}  // namespace

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                       const float* bias, int64_t N, int64_t C, Stream stream) {
  TESSERA_ASSERT(N >= 0 && C >= 1, "checking layernorm_forward's sizes");
  if (N == 0) return;
  layernorm_forward_kernel<float>
      <<<row_blocks(N), kRowThreads, 0, stream>>>(out, mean, rstd, inp, weight, bias, N, C);
  TESSERA_CUDA_LAUNCH_CHECK("launching layernorm_forward");
}

void layernorm_forward_bf16(uint16_t* out, float* mean, float* rstd, const uint16_t* inp,
                            const float* weight, const float* bias, int64_t N, int64_t C,
                            Stream stream) {
  TESSERA_ASSERT(N >= 0 && C >= 1, "checking layernorm_forward_bf16's sizes");
  if (N == 0) return;
  layernorm_forward_kernel<__nv_bfloat16><<<row_blocks(N), kRowThreads, 0, stream>>>(
      reinterpret_cast<__nv_bfloat16*>(out), mean, rstd,
      reinterpret_cast<const __nv_bfloat16*>(inp), weight, bias, N, C);
  TESSERA_CUDA_LAUNCH_CHECK("launching layernorm_forward_bf16");
}

namespace {

template <typename Tin>
void backward(float* dinp, float* dweight, float* dbias, const float* dout, const Tin* inp,
              const float* weight, const float* mean, const float* rstd, int64_t N, int64_t C,
              Stream stream) {
  TESSERA_ASSERT(N >= 0 && C >= 1, "checking layernorm_backward's sizes");
  if (N == 0) return;
  layernorm_backward_input_kernel<Tin>
      <<<row_blocks(N), kRowThreads, 0, stream>>>(dinp, dout, inp, weight, mean, rstd, N, C);
  TESSERA_CUDA_LAUNCH_CHECK("launching layernorm_backward (input gradient)");
  const auto col_blocks = static_cast<unsigned int>((C + kColTile - 1) / kColTile);
  layernorm_backward_params_kernel<Tin><<<col_blocks, dim3(kColTile, kRowLanes), 0, stream>>>(
      dweight, dbias, dout, inp, mean, rstd, N, C);
  TESSERA_CUDA_LAUNCH_CHECK("launching layernorm_backward (parameter gradients)");
}

}  // namespace

void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                        const float* inp, const float* weight, const float* mean, const float* rstd,
                        int64_t N, int64_t C, Stream stream) {
  backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C, stream);
}

void layernorm_backward_bf16_input(float* dinp, float* dweight, float* dbias, const float* dout,
                                   const uint16_t* inp, const float* weight, const float* mean,
                                   const float* rstd, int64_t N, int64_t C, Stream stream) {
  backward(dinp, dweight, dbias, dout, reinterpret_cast<const __nv_bfloat16*>(inp), weight, mean,
           rstd, N, C, stream);
}

}  // namespace tessera::backends::cuda
