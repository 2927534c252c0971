// Vocab-parallel softmax cross-entropy passes on the GPU: one block of kThreads per row (blocks
// stride over rows when N is large), block reductions by warp shuffles then shared memory in a
// fixed order, so the same inputs give the same bits on every run. Only real columns are read.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "backends/cuda/crossentropy.h"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/warp_reduce.cuh"

namespace tessera::backends::cuda {
namespace {

constexpr int kThreads = 256;  // a multiple of 32: tree_block_reduce assumes whole warps
constexpr int kWarps = kThreads / kWarp;
constexpr int64_t kMaxBlocks = 1 << 16;

__device__ inline float to_float(float x) { return x; }
__device__ inline float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ inline void store(float* p, float x) { *p = x; }
__device__ inline void store(__nv_bfloat16* p, float x) { *p = __float2bfloat16_rn(x); }

// Reduces x over the block (blockDim.x == kThreads) and returns the result to every thread.
// Butterfly shuffles inside each warp, then warp 0 combines the kWarps partials by another
// butterfly (warp_reduce.cuh's block_reduce combines them in sequence instead): a fixed order.
// Every thread of the block must call it (it holds __syncthreads).
template <typename Op>
__device__ float tree_block_reduce(float x, Op op, float identity) {
  __shared__ float partial[kWarps];
  __shared__ float result;
  const int lane = threadIdx.x % kWarp;
  const int warp = threadIdx.x / kWarp;
  x = warp_reduce(x, op);
  if (lane == 0) partial[warp] = x;
  __syncthreads();
  if (warp == 0) {
    const float y = warp_reduce(lane < kWarps ? partial[lane] : identity, op);
    if (lane == 0) result = y;
  }
  // Every thread has finished reading `partial` and thread 0 has written `result`, so the next
  // call may reuse both.
  __syncthreads();
  return result;
}

// The column of `target` in this rank's shard, or -1 when it is ignored or lives on another rank.
__device__ inline int64_t local_column(int32_t target, int64_t n_cols, int64_t vocab_start) {
  const int64_t col = static_cast<int64_t>(target) - vocab_start;
  return (target >= 0 && col >= 0 && col < n_cols) ? col : -1;
}

template <typename T>
__global__ void row_max_kernel(float* row_max, const T* logits, int64_t N, int64_t n_cols,
                               int64_t ld) {
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const T* row = logits + n * ld;
    float m = -INFINITY;
    // fmaxf skips a NaN, as the CPU's `row[v] > m ? row[v] : m` does.
    for (int64_t v = threadIdx.x; v < n_cols; v += kThreads) m = fmaxf(m, to_float(row[v]));
    m = tree_block_reduce(m, MaxOp{}, -INFINITY);
    if (threadIdx.x == 0) row_max[n] = m;
  }
}

template <typename T>
__global__ void sumexp_target_kernel(float* sumexp, float* target_logit, const T* logits,
                                     const int32_t* targets, const float* row_max, int64_t N,
                                     int64_t n_cols, int64_t ld, int64_t vocab_start) {
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const T* row = logits + n * ld;
    const float m = row_max[n];
    float s = 0.0f;
    for (int64_t v = threadIdx.x; v < n_cols; v += kThreads) s += expf(to_float(row[v]) - m);
    s = tree_block_reduce(s, SumOp{}, 0.0f);
    if (threadIdx.x == 0) {
      sumexp[n] = s;
      const int64_t col = local_column(targets[n], n_cols, vocab_start);
      target_logit[n] = col >= 0 ? to_float(row[col]) : 0.0f;
    }
  }
}

__global__ void loss_kernel(float* losses, const float* row_max, const float* sumexp,
                            const float* target_logit, const int32_t* targets, int64_t N) {
  for (int64_t n = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; n < N;
       n += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    losses[n] = targets[n] < 0 ? 0.0f : logf(sumexp[n]) + row_max[n] - target_logit[n];
  }
}

// Each element is read and written by one thread, read first: dlogits == logits is safe.
template <typename T>
__global__ void backward_kernel(T* dlogits, const T* logits, const int32_t* targets,
                                const float* row_max, const float* sumexp, const float* dlosses,
                                int64_t N, int64_t n_cols, int64_t ld, int64_t vocab_start) {
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    T* drow = dlogits + n * ld;
    if (targets[n] < 0) {
      for (int64_t v = threadIdx.x; v < ld; v += kThreads) store(drow + v, 0.0f);
      continue;
    }
    const T* row = logits + n * ld;
    const float m = row_max[n];
    const float dloss = dlosses[n];
    const float scale = dloss / sumexp[n];  // softmax_v · dloss = exp(z_v - m) · scale
    const int64_t col = local_column(targets[n], n_cols, vocab_start);
    for (int64_t v = threadIdx.x; v < ld; v += kThreads) {
      float g = 0.0f;  // padding columns
      if (v < n_cols) {
        g = expf(to_float(row[v]) - m) * scale;
        if (v == col) g -= dloss;
      }
      store(drow + v, g);
    }
  }
}

void check_shape(int64_t N, int64_t n_cols, int64_t ld) {
  TESSERA_ASSERT(N >= 0 && n_cols >= 0 && n_cols <= ld,
                 "cross-entropy (CUDA): need N >= 0 and 0 <= n_cols <= ld");
}

unsigned row_blocks(int64_t N) { return static_cast<unsigned>(std::min(N, kMaxBlocks)); }

template <typename T>
using Dev = std::conditional_t<std::is_same_v<T, float>, float, __nv_bfloat16>;

template <typename T>
void row_max_impl(float* row_max, const T* logits, int64_t N, int64_t n_cols, int64_t ld,
                  Stream stream) {
  check_shape(N, n_cols, ld);
  if (N == 0) return;
  row_max_kernel<<<row_blocks(N), kThreads, 0, stream>>>(
      row_max, reinterpret_cast<const Dev<T>*>(logits), N, n_cols, ld);
  TESSERA_CUDA_LAUNCH_CHECK("cross-entropy: row max");
}

template <typename T>
void sumexp_target_impl(float* sumexp, float* target_logit, const T* logits, const int32_t* targets,
                        const float* row_max, int64_t N, int64_t n_cols, int64_t ld,
                        int64_t vocab_start, Stream stream) {
  check_shape(N, n_cols, ld);
  if (N == 0) return;
  sumexp_target_kernel<<<row_blocks(N), kThreads, 0, stream>>>(
      sumexp, target_logit, reinterpret_cast<const Dev<T>*>(logits), targets, row_max, N, n_cols,
      ld, vocab_start);
  TESSERA_CUDA_LAUNCH_CHECK("cross-entropy: row sum of exponentials and target logit");
}

template <typename T>
void backward_impl(T* dlogits, const T* logits, const int32_t* targets, const float* row_max,
                   const float* sumexp, const float* dlosses, int64_t N, int64_t n_cols, int64_t ld,
                   int64_t vocab_start, Stream stream) {
  check_shape(N, n_cols, ld);
  if (N == 0) return;
  backward_kernel<<<row_blocks(N), kThreads, 0, stream>>>(
      reinterpret_cast<Dev<T>*>(dlogits), reinterpret_cast<const Dev<T>*>(logits), targets, row_max,
      sumexp, dlosses, N, n_cols, ld, vocab_start);
  TESSERA_CUDA_LAUNCH_CHECK("cross-entropy: backward");
}

}  // namespace

void xent_row_max(float* row_max, const float* logits, int64_t N, int64_t n_cols, int64_t ld,
                  Stream stream) {
  row_max_impl(row_max, logits, N, n_cols, ld, stream);
}

void xent_row_max_bf16(float* row_max, const uint16_t* logits, int64_t N, int64_t n_cols,
                       int64_t ld, Stream stream) {
  row_max_impl(row_max, logits, N, n_cols, ld, stream);
}

void xent_row_sumexp_target(float* sumexp, float* target_logit, const float* logits,
                            const int32_t* targets, const float* row_max, int64_t N, int64_t n_cols,
                            int64_t ld, int64_t vocab_start, Stream stream) {
  sumexp_target_impl(sumexp, target_logit, logits, targets, row_max, N, n_cols, ld, vocab_start,
                     stream);
}

void xent_row_sumexp_target_bf16(float* sumexp, float* target_logit, const uint16_t* logits,
                                 const int32_t* targets, const float* row_max, int64_t N,
                                 int64_t n_cols, int64_t ld, int64_t vocab_start, Stream stream) {
  sumexp_target_impl(sumexp, target_logit, logits, targets, row_max, N, n_cols, ld, vocab_start,
                     stream);
}

void xent_loss(float* losses, const float* row_max, const float* sumexp, const float* target_logit,
               const int32_t* targets, int64_t N, Stream stream) {
  TESSERA_ASSERT(N >= 0, "cross-entropy (CUDA): need N >= 0");
  if (N == 0) return;
  const int64_t blocks = std::min<int64_t>((N + kThreads - 1) / kThreads, kMaxBlocks);
  loss_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(losses, row_max, sumexp,
                                                                      target_logit, targets, N);
  TESSERA_CUDA_LAUNCH_CHECK("cross-entropy: loss");
}

void xent_backward(float* dlogits, const float* logits, const int32_t* targets,
                   const float* row_max, const float* sumexp, const float* dlosses, int64_t N,
                   int64_t n_cols, int64_t ld, int64_t vocab_start, Stream stream) {
  backward_impl(dlogits, logits, targets, row_max, sumexp, dlosses, N, n_cols, ld, vocab_start,
                stream);
}

void xent_backward_bf16(uint16_t* dlogits, const uint16_t* logits, const int32_t* targets,
                        const float* row_max, const float* sumexp, const float* dlosses, int64_t N,
                        int64_t n_cols, int64_t ld, int64_t vocab_start, Stream stream) {
  backward_impl(dlogits, logits, targets, row_max, sumexp, dlosses, N, n_cols, ld, vocab_start,
                stream);
}

}  // namespace tessera::backends::cuda
