// The decode attention kernel (device code only; launched by decode.cu): decode rows against a
// paged KV cache, one block per (row, head), whose arithmetic reads nothing of the other rows.
// Device code only, so that tests/unit/attention_decode_emulated_test.cpp can run this same kernel
// on the host under tests/unit/emulated_cuda.h (see flash_attention_kernels.cuh).
#pragma once

#include <cmath>
#include <cstdint>

#include "backends/cuda/warp_reduce.cuh"

#ifndef TESSERA_SHARED
#define TESSERA_SHARED(type, name, count) __shared__ type name[count]
#endif
#ifndef TESSERA_DYNAMIC_SHARED
#define TESSERA_DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#endif

namespace tessera::backends::cuda::decode_kernels {
// Internal linkage: the CUDA library and the emulated test both compile these kernels, and
// a test binary links both.
namespace {

constexpr int kThreads = 128;  // attention_decode: whole warps (block_reduce relies on it)
constexpr int kWarps = kThreads / kWarp;
static_assert(kThreads % kWarp == 0 && kWarps <= kWarp, "block_reduce layout");
// Positions per tile of attention_decode's scores (4 KiB of shared memory). A context of at most
// kTile positions is one tile: a plain two-pass softmax.
constexpr int kTile = 1024;

// The cache row of position p of the slot whose block table row is `table` (kv_pages.h).
__device__ __forceinline__ int64_t cache_row(const int32_t* table, int64_t block_size, int64_t p) {
  return static_cast<int64_t>(table[p / block_size]) * block_size + p % block_size;
}

// Block = (row i, head h) = (blockIdx.x / NH, blockIdx.x % NH). Over the context 0..n_ctx-1 of
// slot slots[i] (its positions in the blocks its table row names), in tiles of kTile positions,
// with m the running max of the scores s_j, l the running Σ exp(s_j - m) and acc_d the running Σ
// exp(s_j - m) v_jd. A new tile with max m' scales l and acc by exp(m - m') before adding its own
// terms; after the last tile out_d = acc_d / l, which is softmax(s) · V exactly (Milakov &
// Gimelshein 2018, "Online normalizer calculation"). Dynamic shared memory: 2 * HS floats (q of the
// row, then acc).
__global__ void attention_decode_kernel(float* out, const float* qkv, const float* k_cache,
                                        const float* v_cache, const int32_t* block_table,
                                        int64_t blocks_per_slot, int64_t block_size,
                                        const int32_t* slots, const int32_t* positions, int64_t C,
                                        int64_t NH, int64_t HS, float scale) {
  TESSERA_DYNAMIC_SHARED(float, dynamic_shared);
  float* q_s = dynamic_shared;
  float* acc = dynamic_shared + HS;
  TESSERA_SHARED(float, scores, kTile);
  TESSERA_SHARED(int64_t, rows, kTile);  // the tile's positions' cache rows
  TESSERA_SHARED(float, scratch, kWarps);

  const int64_t i = blockIdx.x / NH;
  const int64_t h = blockIdx.x % NH;
  const int64_t n_ctx = static_cast<int64_t>(positions[i]) + 1;
  const int32_t* table = block_table + static_cast<int64_t>(slots[i]) * blocks_per_slot;
  const float* k0 = k_cache + h * HS;  // the key of cache row r at k0 + r * C
  const float* v0 = v_cache + h * HS;
  const float* q = qkv + i * 3 * C + h * HS;
  const int lane = threadIdx.x % kWarp;
  const int warp = threadIdx.x / kWarp;

  // Thread threadIdx.x alone owns acc[d] for d = threadIdx.x + k * kThreads, from here to the end.
  for (int64_t d = threadIdx.x; d < HS; d += kThreads) {
    q_s[d] = q[d];
    acc[d] = 0.0f;
  }

  float m = -INFINITY;  // block-uniform: every thread holds the same m and l
  float l = 0.0f;
  for (int64_t t0 = 0; t0 < n_ctx; t0 += kTile) {
    const int len = static_cast<int>(n_ctx - t0 < kTile ? n_ctx - t0 : kTile);
    // q_s is written, and the previous tile's scores and rows are all read, before they are
    // rewritten.
    __syncthreads();
    for (int j = threadIdx.x; j < len; j += kThreads)
      rows[j] = cache_row(table, block_size, t0 + j);
    __syncthreads();
    // One warp per position: lanes split the head dimension (coalesced key reads).
    for (int j = warp; j < len; j += kWarps) {
      const float* k = k0 + rows[j] * C;
      float s = 0.0f;
      for (int64_t d = lane; d < HS; d += kWarp) s += q_s[d] * k[d];
      s = warp_sum(s);
      if (lane == 0) scores[j] = s * scale;
    }
    __syncthreads();

    float tile_max = -INFINITY;
    for (int j = threadIdx.x; j < len; j += kThreads) tile_max = fmaxf(tile_max, scores[j]);
    const float m_new =
        fmaxf(m, block_reduce<kWarps>(tile_max, MaxOp{}, scratch));  // finite: len >= 1
    // exp(m - m') rescales the earlier tiles' sums to the new max; on the first tile m = -inf
    // gives 0, and l and acc are still 0.
    const float rescale = expf(m - m_new);
    float tile_sum = 0.0f;
    for (int j = threadIdx.x; j < len; j += kThreads) {
      const float e = expf(scores[j] - m_new);
      scores[j] = e;
      tile_sum += e;
    }
    // block_reduce's barriers also publish the exponentiated scores to the whole block.
    l = l * rescale +
        block_reduce<kWarps>(tile_sum, SumOp{}, scratch);  // >= 1 after the max's tile
    for (int64_t d = threadIdx.x; d < HS; d += kThreads) {
      const float* v = v0 + d;
      float a = acc[d] * rescale;
      for (int j = 0; j < len; ++j) a += scores[j] * v[rows[j] * C];
      acc[d] = a;
    }
    m = m_new;
  }

  float* o = out + i * C + h * HS;
  const float inv = 1.0f / l;
  for (int64_t d = threadIdx.x; d < HS; d += kThreads) o[d] = acc[d] * inv;
}

}  // namespace
}  // namespace tessera::backends::cuda::decode_kernels
