// Token (vocab-sharded) and position embedding kernels. Backward scatters give each output
// element one owning thread that adds its contributions in a fixed order: no atomics, and the
// same bits on every run.
#include <cuda_runtime.h>

#include <algorithm>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/embedding.h"

namespace tessera::backends::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kColumnThreads = 128;      // embedding_backward: few columns, so small blocks
constexpr int64_t kMaxBlocks = 1 << 16;  // grid-stride beyond this

// Over the flat index i of (N, C).
__global__ void embedding_forward_kernel(float* out, const int32_t* tokens, const float* wte_local,
                                         int64_t N, int64_t C, int64_t vocab_start,
                                         int64_t V_local) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < N * C;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = i / C;
    const int64_t c = i - n * C;
    const int64_t row = static_cast<int64_t>(tokens[n]) - vocab_start;
    out[i] = (row >= 0 && row < V_local) ? wte_local[row * C + c] : 0.0f;
  }
}

// out[n, c] = wte_local[tok[n] - vocab_start, c] · [token in range], so
// dL/dwte_local[v, c] = sum over n with tok[n] - vocab_start = v of dout[n, c]. Thread c owns
// column c of every row of dwte_local and walks n in order (as the CPU twin does).
__global__ void embedding_backward_kernel(float* dwte_local, const float* dout,
                                          const int32_t* tokens, int64_t N, int64_t C,
                                          int64_t vocab_start, int64_t V_local) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  for (int64_t n = 0; n < N; ++n) {
    const int64_t row = static_cast<int64_t>(tokens[n]) - vocab_start;  // same for the warp
    if (row < 0 || row >= V_local) continue;
    dwte_local[row * C + c] += dout[n * C + c];
  }
}

// Over the flat index i of (B, T, C): position (i / C) % T.
__global__ void positional_forward_kernel(float* out, const float* wpe, int64_t total, int64_t Tlen,
                                          int64_t C) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t bt = i / C;
    const int64_t c = i - bt * C;
    out[i] += wpe[(bt % Tlen) * C + c];
  }
}

// out[b, t, c] += wpe[t, c], so dL/dwpe[t, c] = sum over b of dout[b, t, c]. Thread (t, c) owns
// dwpe[t, c] and adds b = 0..B-1 in order.
__global__ void positional_backward_kernel(float* dwpe, const float* dout, int64_t B, int64_t Tlen,
                                           int64_t C) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < Tlen * C;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float acc = dwpe[i];  // added onto one by one, as the CPU does: the same bits
    for (int64_t b = 0; b < B; ++b) acc += dout[b * Tlen * C + i];
    dwpe[i] = acc;
  }
}

unsigned int element_blocks(int64_t n) {
  return static_cast<unsigned int>(std::min((n + kThreads - 1) / kThreads, kMaxBlocks));
}

}  // namespace

void embedding_forward(float* out, const int32_t* tokens, const float* wte_local, int64_t N,
                       int64_t C, int64_t vocab_start, int64_t V_local, Stream stream) {
  TESSERA_ASSERT(N >= 0 && C >= 0 && V_local >= 0, "checking embedding_forward's sizes");
  if (N * C == 0) return;
  embedding_forward_kernel<<<element_blocks(N * C), kThreads, 0, stream>>>(
      out, tokens, wte_local, N, C, vocab_start, V_local);
  TESSERA_CUDA_LAUNCH_CHECK("launching embedding_forward");
}

void embedding_backward(float* dwte_local, const float* dout, const int32_t* tokens, int64_t N,
                        int64_t C, int64_t vocab_start, int64_t V_local, Stream stream) {
  TESSERA_ASSERT(N >= 0 && C >= 0 && V_local >= 0, "checking embedding_backward's sizes");
  if (N * C == 0) return;
  const auto blocks = static_cast<unsigned int>((C + kColumnThreads - 1) / kColumnThreads);
  embedding_backward_kernel<<<blocks, kColumnThreads, 0, stream>>>(dwte_local, dout, tokens, N, C,
                                                                   vocab_start, V_local);
  TESSERA_CUDA_LAUNCH_CHECK("launching embedding_backward");
}

void positional_forward(float* out, const float* wpe, int64_t B, int64_t Tlen, int64_t C,
                        Stream stream) {
  TESSERA_ASSERT(B >= 0 && Tlen >= 0 && C >= 0, "checking positional_forward's sizes");
  if (B * Tlen * C == 0) return;
  positional_forward_kernel<<<element_blocks(B * Tlen * C), kThreads, 0, stream>>>(
      out, wpe, B * Tlen * C, Tlen, C);
  TESSERA_CUDA_LAUNCH_CHECK("launching positional_forward");
}

void positional_backward(float* dwpe, const float* dout, int64_t B, int64_t Tlen, int64_t C,
                         Stream stream) {
  TESSERA_ASSERT(B >= 0 && Tlen >= 0 && C >= 0, "checking positional_backward's sizes");
  if (Tlen * C == 0) return;
  positional_backward_kernel<<<element_blocks(Tlen * C), kThreads, 0, stream>>>(dwpe, dout, B, Tlen,
                                                                                C);
  TESSERA_CUDA_LAUNCH_CHECK("launching positional_backward");
}

}  // namespace tessera::backends::cuda
