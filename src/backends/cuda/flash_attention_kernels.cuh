// The fused causal attention kernels (device code only; launched by flash_attention.cu): tiles
// through shared memory, online softmax, no (T, T) tensor.
//
// Work split. A block holds kWarps warps and covers kRowsPerBlock consecutive rows of one
// (batch, head): query rows in forward and dQ, key rows in dK/dV. Warp w owns kRowsPerWarp of
// them; lane l of a warp owns channels l, l + 32, ... of the head (kDims = HS / 32 of them), so a
// dot product over the head is kDims multiply-adds per lane and a butterfly sum over the warp,
// whose result every lane holds, bit for bit the same (each step adds the same two values in
// either order). The other side (keys and values, or queries and output gradients) comes through
// shared memory kTile rows at a time, loaded by the whole block.
//
// Every score is s = scale · dot(q_t, k_j) computed by the one function `score` with the query as
// its first argument, in forward and in both backward kernels, so backward recomputes forward's
// scores exactly; P_tj = exp(s - max_t) · inv_t from the saved statistics, as the plain kernels.
//
// Activations may be fp32 or bf16 (raw bits as uint16_t; train.dtype: bf16): qkv is read through
// load_elem (exact) and out stored through store_elem (rounded to nearest even once, NaN kept
// quiet: core::to_bf16's bits), all arithmetic fp32. On bf16 inputs the kernels therefore compute
// exactly what they compute on those values widened to fp32. dout, dqkv, the statistics and the
// workspace are always fp32.
//
// Device code only, so that tests/unit/flash_attention_emulated_test.cpp can compile these same
// kernels for the host under a small emulation of the CUDA execution model (tests/emulated_cuda.h:
// a block's threads as OS threads, barriers, warp shuffles), which checks their logic in CI on
// machines without a GPU. Shared arrays are declared with TESSERA_SHARED for that reason (the
// emulation poisons them between blocks).
#pragma once

#include <cmath>
#include <cstdint>

#include "backends/cuda/warp_reduce.cuh"

#ifndef TESSERA_SHARED
#define TESSERA_SHARED(type, name, count) __shared__ type name[count]
#endif

namespace tessera::backends::cuda::flash {
// Internal linkage: the CUDA library and the emulated test both compile these kernels, and
// a test binary links both.
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * kWarp;
constexpr int kRowsPerWarp = 4;
constexpr int kRowsPerBlock = kWarps * kRowsPerWarp;  // 16
constexpr int kTile = 32;                             // rows of the other side per shared tile

__device__ __forceinline__ int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
__device__ __forceinline__ int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

// One activation element as fp32: itself, or a bf16 value (its bits the top half of a float).
__device__ __forceinline__ float load_elem(float x) { return x; }
__device__ __forceinline__ float load_elem(uint16_t bits) {
  return __uint_as_float(static_cast<unsigned>(bits) << 16);
}
// Stores x: as it is, or rounded to bf16 (nearest, ties to even; a NaN stays a quiet NaN).
__device__ __forceinline__ void store_elem(float* dst, float x) { *dst = x; }
__device__ __forceinline__ void store_elem(uint16_t* dst, float x) {
  const unsigned bits = __float_as_uint(x);
  *dst = (bits & 0x7FFFFFFFu) > 0x7F800000u
             ? static_cast<uint16_t>((bits >> 16) | 0x0040u)
             : static_cast<uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

// Σ_d a[d] b[d] over the head, a and b the lane's kDims channels; every lane gets the sum.
template <int kDims>
__device__ __forceinline__ float dot(const float (&a)[kDims], const float (&b)[kDims]) {
  float partial = 0.0f;
#pragma unroll
  for (int i = 0; i < kDims; ++i) partial = fmaf(a[i], b[i], partial);
  return warp_sum(partial);
}

// The score scale · dot(q_t, k_j): the one expression forward and both backward kernels use, its
// product rounded on its own (__fmul_rn is never contracted into a later subtraction), so backward
// recomputes forward's scores bit for bit.
template <int kDims>
__device__ __forceinline__ float score(const float (&q)[kDims], const float (&k)[kDims],
                                       float scale) {
  return __fmul_rn(dot(q, k), scale);
}

// The lane's channels of a head row at `row` (global or shared memory).
template <int kDims, typename Elem>
__device__ __forceinline__ void load_lanes(float (&dst)[kDims], const Elem* row) {
#pragma unroll
  for (int i = 0; i < kDims; ++i) dst[i] = load_elem(row[threadIdx.x % kWarp + kWarp * i]);
}

// Rows first .. first+kTile-1 of one head's part of a (B*T, stride) tensor into tile (kTile, HS),
// zeros past row T-1. base points at row 0's head columns. Called by the whole block.
template <int HS, typename Elem>
__device__ __forceinline__ void load_tile(float* tile, const Elem* base, int64_t stride,
                                          int64_t first, int64_t T) {
  for (int e = threadIdx.x; e < kTile * HS; e += kThreads) {
    const int r = e / HS, d = e % HS;
    const int64_t t = first + r;
    tile[e] = t < T ? load_elem(base[t * stride + d]) : 0.0f;
  }
}

// Forward, block = kRowsPerBlock query rows of (b, h) = blockIdx.y: keys 0 .. last row of the
// block in tiles; per row the running max m, sum l (of exp(s - m)) and output o (unnormalized),
// rescaled when the max grows. Lane j also holds key j's score of the current tile.
// In: the type of qkv, Out: of out (float, or uint16_t for bf16).
template <int HS, typename In = float, typename Out = float>
__global__ void __launch_bounds__(kThreads)
    flash_forward_kernel(Out* out, float* stats, const In* qkv, int64_t T, int64_t C, int64_t NH,
                         float scale) {
  constexpr int kDims = HS / kWarp;
  TESSERA_SHARED(float, k_tile, kTile* HS);
  TESSERA_SHARED(float, v_tile, kTile* HS);
  const int64_t b = blockIdx.y / NH, h = blockIdx.y % NH, C3 = 3 * C;
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock;
  const int64_t first_row = row0 + warp * kRowsPerWarp;
  const In* q_base = qkv + b * T * C3 + h * HS;  // query t at q_base + t * C3
  const In* k_base = q_base + C;
  const In* v_base = q_base + 2 * C;

  float q[kRowsPerWarp][kDims], o[kRowsPerWarp][kDims], m[kRowsPerWarp], l[kRowsPerWarp];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int64_t t = first_row + r;
    if (t < T) load_lanes(q[r], q_base + t * C3);
    m[r] = -INFINITY;
    l[r] = 0.0f;
#pragma unroll
    for (int i = 0; i < kDims; ++i) o[r][i] = 0.0f;
  }
  const int64_t last_row = min64(T - 1, row0 + kRowsPerBlock - 1);
  for (int64_t k0 = 0; k0 <= last_row; k0 += kTile) {
    __syncthreads();  // the previous tile's readers are done
    load_tile<HS>(k_tile, k_base, C3, k0, T);
    load_tile<HS>(v_tile, v_base, C3, k0, T);
    __syncthreads();
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int64_t t = first_row + r;
      if (t >= T || k0 > t) continue;  // warp-uniform: the row sees no key of this tile
      const int keys = static_cast<int>(min64(kTile, t - k0 + 1));
      float my_s = -INFINITY;  // lane j: key k0 + j's score
      for (int j = 0; j < keys; ++j) {
        float k[kDims];
        load_lanes(k, k_tile + j * HS);
        const float s = score(q[r], k, scale);
        if (lane == j) my_s = s;
      }
      const float m_new = fmaxf(m[r], warp_max(my_s));  // finite: key k0 <= t is in the tile
      const float p = lane < keys ? expf(my_s - m_new) : 0.0f;
      const float corr = expf(m[r] - m_new);  // 0 on the first tile (m = -inf)
      l[r] = l[r] * corr + warp_sum(p);
#pragma unroll
      for (int i = 0; i < kDims; ++i) o[r][i] *= corr;
      for (int j = 0; j < keys; ++j) {
        const float pj = __shfl_sync(0xffffffffu, p, j);
#pragma unroll
        for (int i = 0; i < kDims; ++i)
          o[r][i] = fmaf(pj, v_tile[j * HS + lane + kWarp * i], o[r][i]);
      }
      m[r] = m_new;
    }
  }
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int64_t t = first_row + r;
    if (t >= T) continue;
    const float inv = 1.0f / l[r];  // l >= 1: the max term is exp(0)
    Out* o_row = out + (b * T + t) * C + h * HS;
#pragma unroll
    for (int i = 0; i < kDims; ++i) store_elem(o_row + lane + kWarp * i, o[r][i] * inv);
    if (lane == 0) {
      const int64_t row = blockIdx.y * T + t;  // (b * NH + h) * T + t
      stats[2 * row] = m[r];
      stats[2 * row + 1] = inv;
    }
  }
}

// Backward, dQ: block = kRowsPerBlock query rows. Pass 1 over the key tiles sums
// D_t = Σ_j P_tj dP_tj (dP_tj = dO_t · v_j) and saves it for the dK/dV kernel; pass 2 forms
// dS_tj = scale P_tj (dP_tj - D_t) and accumulates dQ_t = Σ_j dS_tj k_j.
template <int HS, typename In = float>
__global__ void __launch_bounds__(kThreads)
    flash_backward_query_kernel(float* dqkv, float* d_rows, const float* dout, const In* qkv,
                                const float* stats, int64_t T, int64_t C, int64_t NH, float scale) {
  constexpr int kDims = HS / kWarp;
  TESSERA_SHARED(float, k_tile, kTile* HS);
  TESSERA_SHARED(float, v_tile, kTile* HS);
  const int64_t b = blockIdx.y / NH, h = blockIdx.y % NH, C3 = 3 * C;
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock;
  const int64_t first_row = row0 + warp * kRowsPerWarp;
  const In* q_base = qkv + b * T * C3 + h * HS;
  const In* k_base = q_base + C;
  const In* v_base = q_base + 2 * C;
  const float* dout_base = dout + b * T * C + h * HS;  // dO_t at dout_base + t * C

  float q[kRowsPerWarp][kDims], g[kRowsPerWarp][kDims], dq[kRowsPerWarp][kDims];
  float m[kRowsPerWarp], inv[kRowsPerWarp], d_sum[kRowsPerWarp];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int64_t t = first_row + r;
    if (t < T) {
      load_lanes(q[r], q_base + t * C3);
      load_lanes(g[r], dout_base + t * C);
      m[r] = stats[2 * (blockIdx.y * T + t)];
      inv[r] = stats[2 * (blockIdx.y * T + t) + 1];
    }
    d_sum[r] = 0.0f;
#pragma unroll
    for (int i = 0; i < kDims; ++i) dq[r][i] = 0.0f;
  }
  const int64_t last_row = min64(T - 1, row0 + kRowsPerBlock - 1);
  for (int pass = 0; pass < 2; ++pass) {
    for (int64_t k0 = 0; k0 <= last_row; k0 += kTile) {
      __syncthreads();
      load_tile<HS>(k_tile, k_base, C3, k0, T);
      load_tile<HS>(v_tile, v_base, C3, k0, T);
      __syncthreads();
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) {
        const int64_t t = first_row + r;
        if (t >= T || k0 > t) continue;
        const int keys = static_cast<int>(min64(kTile, t - k0 + 1));
        for (int j = 0; j < keys; ++j) {
          float k[kDims], v[kDims];
          load_lanes(k, k_tile + j * HS);
          load_lanes(v, v_tile + j * HS);
          const float p = expf(score(q[r], k, scale) - m[r]) * inv[r];
          const float dp = dot(g[r], v);
          if (pass == 0) {
            d_sum[r] = fmaf(p, dp, d_sum[r]);
          } else {
            const float ds = scale * p * (dp - d_sum[r]);
#pragma unroll
            for (int i = 0; i < kDims; ++i) dq[r][i] = fmaf(ds, k[i], dq[r][i]);
          }
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int64_t t = first_row + r;
    if (t >= T) continue;
    float* dq_row = dqkv + (b * T + t) * C3 + h * HS;
#pragma unroll
    for (int i = 0; i < kDims; ++i) dq_row[lane + kWarp * i] = dq[r][i];
    if (lane == 0) d_rows[blockIdx.y * T + t] = d_sum[r];
  }
}

// Backward, dK and dV: block = kRowsPerBlock key rows; the queries t >= the block's first key come
// through shared memory with their output gradients, statistics and D_t. Per key j:
// dV_j = Σ_{t>=j} P_tj dO_t, dK_j = Σ_{t>=j} dS_tj q_t.
template <int HS, typename In = float>
__global__ void __launch_bounds__(kThreads)
    flash_backward_key_value_kernel(float* dqkv, const float* d_rows, const float* dout,
                                    const In* qkv, const float* stats, int64_t T, int64_t C,
                                    int64_t NH, float scale) {
  constexpr int kDims = HS / kWarp;
  TESSERA_SHARED(float, q_tile, kTile* HS);
  TESSERA_SHARED(float, g_tile, kTile* HS);
  TESSERA_SHARED(float, m_tile, kTile);
  TESSERA_SHARED(float, inv_tile, kTile);
  TESSERA_SHARED(float, d_tile, kTile);
  const int64_t b = blockIdx.y / NH, h = blockIdx.y % NH, C3 = 3 * C;
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock;
  const int64_t first_key = row0 + warp * kRowsPerWarp;
  const In* q_base = qkv + b * T * C3 + h * HS;
  const In* k_base = q_base + C;
  const In* v_base = q_base + 2 * C;
  const float* dout_base = dout + b * T * C + h * HS;
  const float* stats_bh = stats + 2 * blockIdx.y * T;
  const float* d_bh = d_rows + blockIdx.y * T;

  float k[kRowsPerWarp][kDims], v[kRowsPerWarp][kDims];
  float dk[kRowsPerWarp][kDims], dv[kRowsPerWarp][kDims];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int64_t j = first_key + r;
    if (j < T) {
      load_lanes(k[r], k_base + j * C3);
      load_lanes(v[r], v_base + j * C3);
    }
#pragma unroll
    for (int i = 0; i < kDims; ++i) dk[r][i] = dv[r][i] = 0.0f;
  }
  // Query tiles aligned to kTile, from the one holding the block's first key.
  for (int64_t t0 = row0 / kTile * kTile; t0 < T; t0 += kTile) {
    __syncthreads();
    load_tile<HS>(q_tile, q_base, C3, t0, T);
    load_tile<HS>(g_tile, dout_base, C, t0, T);
    for (int e = threadIdx.x; e < kTile; e += kThreads) {
      const int64_t t = t0 + e;
      m_tile[e] = t < T ? stats_bh[2 * t] : 0.0f;
      inv_tile[e] = t < T ? stats_bh[2 * t + 1] : 0.0f;
      d_tile[e] = t < T ? d_bh[t] : 0.0f;
    }
    __syncthreads();
    const int queries = static_cast<int>(min64(kTile, T - t0));
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int64_t j = first_key + r;
      if (j >= T) continue;
      for (int e = static_cast<int>(max64(0, j - t0)); e < queries; ++e) {  // t >= j
        float qt[kDims], gt[kDims];
        load_lanes(qt, q_tile + e * HS);
        load_lanes(gt, g_tile + e * HS);
        const float p = expf(score(qt, k[r], scale) - m_tile[e]) * inv_tile[e];
        const float dp = dot(gt, v[r]);
        const float ds = scale * p * (dp - d_tile[e]);
#pragma unroll
        for (int i = 0; i < kDims; ++i) {
          dv[r][i] = fmaf(p, gt[i], dv[r][i]);
          dk[r][i] = fmaf(ds, qt[i], dk[r][i]);
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int64_t j = first_key + r;
    if (j >= T) continue;
    float* dk_row = dqkv + (b * T + j) * C3 + C + h * HS;
    float* dv_row = dk_row + C;
#pragma unroll
    for (int i = 0; i < kDims; ++i) {
      dk_row[lane + kWarp * i] = dk[r][i];
      dv_row[lane + kWarp * i] = dv[r][i];
    }
  }
}

}  // namespace
}  // namespace tessera::backends::cuda::flash
