// Decode-row kernels: KV-cache append and per-row positions as grid-stride copies/adds, and
// attention of decode rows against the cache with one block per (row, head) whose arithmetic
// reads nothing of the other rows, so a row's bits do not depend on the batch it came in.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/decode.h"
#include "backends/cuda/decode_kernels.cuh"

namespace tessera::backends::cuda {
namespace {

using decode_kernels::attention_decode_kernel;
using decode_kernels::cache_row;
using decode_kernels::kThreads;
using decode_kernels::kTile;

// Dynamic shared memory attention_decode may use (q and the output accumulator, 2 * HS floats),
// under the 48 KiB a kernel gets without opting in, beside the static scores tile and the tile's
// cache rows.
constexpr size_t kMaxDynamicShared = 48 * 1024 - kTile * (sizeof(float) + sizeof(int64_t)) - 1024;

constexpr int kElementThreads = 256;
constexpr int64_t kMaxBlocks = 1 << 16;  // grid-stride beyond this

// Over the flat index of (N, C): row n of the batch, column c.
__global__ void kv_append_kernel(float* k_cache, float* v_cache, const float* qkv,
                                 const int32_t* block_table, int64_t blocks_per_slot,
                                 int64_t block_size, const int32_t* slots, const int32_t* positions,
                                 int64_t N, int64_t C) {
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < N * C;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = idx / C;
    const int64_t c = idx - n * C;
    const int64_t row = cache_row(block_table + static_cast<int64_t>(slots[n]) * blocks_per_slot,
                                  block_size, positions[n]);
    const float* k = qkv + n * 3 * C + C;
    k_cache[row * C + c] = k[c];
    v_cache[row * C + c] = k[C + c];
  }
}

__global__ void positional_rows_kernel(float* out, const float* wpe, const int32_t* positions,
                                       int64_t N, int64_t C) {
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < N * C;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = idx / C;
    const int64_t c = idx - n * C;
    out[idx] += wpe[static_cast<int64_t>(positions[n]) * C + c];
  }
}

unsigned int element_blocks(int64_t n) {
  return static_cast<unsigned int>(
      std::min((n + kElementThreads - 1) / kElementThreads, kMaxBlocks));
}

}  // namespace

void kv_append(float* k_cache, float* v_cache, const float* qkv, const KvPages& pages,
               const int32_t* slots, const int32_t* positions, int64_t N, int64_t C,
               Stream stream) {
  TESSERA_ASSERT(N >= 0 && pages.blocks_per_slot >= 1 && pages.block_size >= 1 && C >= 1,
                 "checking kv_append's sizes");
  if (N == 0) return;
  kv_append_kernel<<<element_blocks(N * C), kElementThreads, 0, stream>>>(
      k_cache, v_cache, qkv, pages.block_table, pages.blocks_per_slot, pages.block_size, slots,
      positions, N, C);
  TESSERA_CUDA_LAUNCH_CHECK("launching kv_append");
}

void attention_decode(float* out, const float* qkv, const float* k_cache, const float* v_cache,
                      const KvPages& pages, const int32_t* slots, const int32_t* positions,
                      int64_t N, int64_t C, int64_t NH, Stream stream) {
  TESSERA_ASSERT(
      N >= 0 && pages.blocks_per_slot >= 1 && pages.block_size >= 1 && NH >= 1 && C % NH == 0,
      "checking attention_decode's sizes (C % NH == 0)");
  if (N == 0) return;
  // Invariant: one block per (row, head) fits a 1-D grid.
  TESSERA_ASSERT(N * NH < (int64_t{1} << 31), "checking attention_decode's grid (N * NH < 2^31)");
  const int64_t HS = C / NH;
  const size_t shared_bytes = 2 * static_cast<size_t>(HS) * sizeof(float);
  TESSERA_ASSERT(shared_bytes <= kMaxDynamicShared,
                 "checking attention_decode's head size (2 * HS floats of shared memory)");
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));  // as the CPU twin computes it
  attention_decode_kernel<<<static_cast<unsigned int>(N * NH), kThreads, shared_bytes, stream>>>(
      out, qkv, k_cache, v_cache, pages.block_table, pages.blocks_per_slot, pages.block_size, slots,
      positions, C, NH, HS, scale);
  TESSERA_CUDA_LAUNCH_CHECK("launching attention_decode");
}

void positional_rows(float* out, const float* wpe, const int32_t* positions, int64_t N, int64_t C,
                     Stream stream) {
  TESSERA_ASSERT(N >= 0 && C >= 0, "checking positional_rows' sizes");
  if (N == 0 || C == 0) return;
  positional_rows_kernel<<<element_blocks(N * C), kElementThreads, 0, stream>>>(out, wpe, positions,
                                                                                N, C);
  TESSERA_CUDA_LAUNCH_CHECK("launching positional_rows");
}

}  // namespace tessera::backends::cuda
