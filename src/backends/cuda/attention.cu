// Plain causal attention kernels: one thread block per attention row (b, h, t), fp32 throughout,
// no atomics, so results are deterministic. Written to be obviously right rather than fast (every
// row re-reads K and V). Forward keeps each row's softmax statistics; backward recomputes the
// probabilities from them with forward's own operations (the same bits).
#include <cmath>

#include "backends/cuda/attention.h"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/warp_reduce.cuh"

namespace tessera::backends::cuda {
namespace {

// Threads per block: a multiple of the warp size (block_reduce relies on it).
constexpr int kThreads = 128;
constexpr int kWarps = kThreads / kWarp;
static_assert(kThreads % kWarp == 0 && kWarps <= kWarp, "block_reduce layout");

// Where attention row `row` = (b * NH + h) * T + t of a (B, NH, T, T) buffer lives in qkv.
struct RowIndex {
  int64_t b, h, t, bh;
  __device__ RowIndex(int64_t row, int64_t T, int64_t NH)
      : b(row / T / NH), h(row / T % NH), t(row % T), bh(row / T) {}
};

// Score s_j = scale q_t·k_j of one row, as forward and backward's recomputation both take it.
__device__ __forceinline__ float score(const float* q_row, const float* k, int64_t HS,
                                       float scale) {
  float s = 0.0f;
  for (int64_t d = 0; d < HS; ++d) s += q_row[d] * k[d];
  return s * scale;
}

// Forward, block = one row (b, h, t): scores s_j = scale q_t·k_j for j <= t, their softmax into
// p_all[row, :] (workspace; zeros above the diagonal) and its statistics [max, 1 / sum] into
// stats[row, :], then out[b, t, h, :] = Σ_j P_tj v_j. Dynamic shared memory: HS floats (q_t).
__global__ void attention_forward_kernel(float* out, float* stats, float* p_all, const float* qkv,
                                         int64_t T, int64_t C, int64_t NH, int64_t HS,
                                         float scale) {
  extern __shared__ float q_row[];
  __shared__ float scratch[kWarps];
  const RowIndex r(blockIdx.x, T, NH);
  const int64_t C3 = 3 * C;
  const float* q = qkv + (r.b * T + r.t) * C3 + r.h * HS;
  const float* k0 = qkv + r.b * T * C3 + C + r.h * HS;  // key j at k0 + j * C3
  const float* v0 = k0 + C;                             // value j at v0 + j * C3
  float* p = p_all + static_cast<int64_t>(blockIdx.x) * T;

  for (int64_t d = threadIdx.x; d < HS; d += blockDim.x) q_row[d] = q[d];
  __syncthreads();

  // Each thread owns the keys j = threadIdx.x + k * blockDim.x in every loop below, so p[j] is
  // only ever touched by one thread until the barrier before the output loop.
  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j <= r.t; j += blockDim.x) {
    const float s = score(q_row, k0 + j * C3, HS, scale);
    p[j] = s;
    m = fmaxf(m, s);
  }
  m = block_reduce<kWarps>(m, MaxOp{}, scratch);  // finite: key 0 is always visible

  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j <= r.t; j += blockDim.x) {
    const float e = expf(p[j] - m);
    p[j] = e;
    sum += e;
  }
  sum = block_reduce<kWarps>(sum, SumOp{}, scratch);  // >= 1: the max term is exp(0)
  const float inv = 1.0f / sum;
  for (int64_t j = threadIdx.x; j < T; j += blockDim.x) p[j] = j <= r.t ? p[j] * inv : 0.0f;
  if (threadIdx.x == 0) {
    stats[2 * static_cast<int64_t>(blockIdx.x)] = m;
    stats[2 * static_cast<int64_t>(blockIdx.x) + 1] = inv;
  }
  // The barrier makes the row's global writes visible to the whole block.
  __syncthreads();

  float* o = out + (r.b * T + r.t) * C + r.h * HS;
  for (int64_t d = threadIdx.x; d < HS; d += blockDim.x) {
    float acc = 0.0f;
    for (int64_t j = 0; j <= r.t; ++j) acc += p[j] * v0[j * C3 + d];
    o[d] = acc;
  }
}

// Backward stage 1, block = one row (b, h, t): P_tj = exp(s_j - max) * (1 / sum) from the
// statistics (forward's operations: its bits) into p_all[row, :], dP_tj = dO_t·v_j, then
// dS_tj = scale P_tj (dP_tj − Σ_i P_ti dP_ti) into ds[row, :] (both zero above the diagonal),
// then dQ_t = Σ_j dS_tj k_j (scale already folded into dS). Dynamic shared memory: 2 HS floats
// (dO_t, q_t).
__global__ void attention_backward_query_kernel(float* dqkv, float* p_all, float* ds_all,
                                                const float* dout, const float* qkv,
                                                const float* stats, int64_t T, int64_t C,
                                                int64_t NH, int64_t HS, float scale) {
  extern __shared__ float dout_row[];  // then q_row at dout_row + HS
  __shared__ float scratch[kWarps];
  const RowIndex r(blockIdx.x, T, NH);
  const int64_t C3 = 3 * C;
  const float* k0 = qkv + r.b * T * C3 + C + r.h * HS;
  const float* v0 = k0 + C;
  float* p = p_all + static_cast<int64_t>(blockIdx.x) * T;
  float* ds = ds_all + static_cast<int64_t>(blockIdx.x) * T;
  float* q_row = dout_row + HS;
  const float m = stats[2 * static_cast<int64_t>(blockIdx.x)];
  const float inv = stats[2 * static_cast<int64_t>(blockIdx.x) + 1];

  const float* dout_t = dout + (r.b * T + r.t) * C + r.h * HS;
  const float* q = qkv + (r.b * T + r.t) * C3 + r.h * HS;
  for (int64_t d = threadIdx.x; d < HS; d += blockDim.x) {
    dout_row[d] = dout_t[d];
    q_row[d] = q[d];
  }
  __syncthreads();

  // As in forward, thread threadIdx.x alone owns p[j] and ds[j] for its j until the barrier
  // below.
  float partial = 0.0f;
  for (int64_t j = threadIdx.x; j < T; j += blockDim.x) {
    if (j > r.t) {
      p[j] = 0.0f;
      continue;
    }
    const float e = expf(score(q_row, k0 + j * C3, HS, scale) - m);
    const float pj = e * inv;
    p[j] = pj;
    const float* v = v0 + j * C3;
    float dp = 0.0f;
    for (int64_t d = 0; d < HS; ++d) dp += dout_row[d] * v[d];
    ds[j] = dp;
    partial += pj * dp;
  }
  const float dot = block_reduce<kWarps>(partial, SumOp{}, scratch);
  for (int64_t j = threadIdx.x; j < T; j += blockDim.x) {
    ds[j] = j <= r.t ? scale * p[j] * (ds[j] - dot) : 0.0f;
  }
  __syncthreads();

  float* dq = dqkv + (r.b * T + r.t) * C3 + r.h * HS;
  for (int64_t d = threadIdx.x; d < HS; d += blockDim.x) {
    float acc = 0.0f;
    for (int64_t j = 0; j <= r.t; ++j) acc += ds[j] * k0[j * C3 + d];
    dq[d] = acc;
  }
}

// Backward stage 2, block = one key row (b, h, j): dK_j = Σ_{t>=j} dS_tj q_t and
// dV_j = Σ_{t>=j} P_tj dO_t (rows t < j are masked: P = dS = 0 there). Reads stage 1's p and ds.
__global__ void attention_backward_key_value_kernel(float* dqkv, const float* p_all,
                                                    const float* ds_all, const float* dout,
                                                    const float* qkv, int64_t T, int64_t C,
                                                    int64_t NH, int64_t HS) {
  const RowIndex r(blockIdx.x, T, NH);  // r.t is the key index j here
  const int64_t j = r.t;
  const int64_t C3 = 3 * C;
  const float* q0 = qkv + r.b * T * C3 + r.h * HS;  // query t at q0 + t * C3
  const float* dout0 = dout + r.b * T * C + r.h * HS;
  const float* p_col = p_all + r.bh * T * T + j;  // P_tj at p_col[t * T]
  const float* ds_col = ds_all + r.bh * T * T + j;
  float* dk = dqkv + (r.b * T + j) * C3 + C + r.h * HS;
  float* dv = dk + C;
  for (int64_t d = threadIdx.x; d < HS; d += blockDim.x) {
    float acc_k = 0.0f, acc_v = 0.0f;
    for (int64_t t = j; t < T; ++t) {
      acc_k += ds_col[t * T] * q0[t * C3 + d];
      acc_v += p_col[t * T] * dout0[t * C + d];
    }
    dk[d] = acc_k;
    dv[d] = acc_v;
  }
}

void check_sizes(int64_t B, int64_t T, int64_t C, int64_t NH) {
  TESSERA_ASSERT(B > 0 && T > 0 && C > 0 && NH > 0, "attention: sizes must be positive");
  TESSERA_ASSERT(C % NH == 0, "attention: channels C must split evenly over NH heads");
  // Invariant: one block per row, and the row count fits the grid's x dimension.
  TESSERA_ASSERT(B * NH * T <= INT32_MAX, "attention: B * NH * T rows exceed the CUDA grid");
  TESSERA_ASSERT(2 * (C / NH) * static_cast<int64_t>(sizeof(float)) <= 48 * 1024,
                 "attention: head size HS exceeds the 48 KiB shared-memory rows");
}

}  // namespace

int64_t attention_workspace_size(int64_t B, int64_t T, int64_t /*C*/, int64_t NH) {
  return 2 * B * NH * T * T;  // P, then dS (backward)
}

void attention_forward(float* out, float* stats, float* workspace, const float* qkv, int64_t B,
                       int64_t T, int64_t C, int64_t NH, Stream stream) {
  check_sizes(B, T, C, NH);
  const int64_t HS = C / NH;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  const auto rows = static_cast<unsigned>(B * NH * T);
  attention_forward_kernel<<<rows, kThreads, HS * sizeof(float), stream>>>(
      out, stats, workspace, qkv, T, C, NH, HS, scale);
  TESSERA_CUDA_LAUNCH_CHECK("launching attention_forward_kernel");
}

void attention_backward(float* dqkv, float* workspace, const float* dout, const float* qkv,
                        const float* stats, int64_t B, int64_t T, int64_t C, int64_t NH,
                        Stream stream) {
  check_sizes(B, T, C, NH);
  const int64_t HS = C / NH;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  const auto rows = static_cast<unsigned>(B * NH * T);
  float* p = workspace;
  float* ds = workspace + B * NH * T * T;
  attention_backward_query_kernel<<<rows, kThreads, 2 * HS * sizeof(float), stream>>>(
      dqkv, p, ds, dout, qkv, stats, T, C, NH, HS, scale);
  TESSERA_CUDA_LAUNCH_CHECK("launching attention_backward_query_kernel");
  attention_backward_key_value_kernel<<<rows, kThreads, 0, stream>>>(dqkv, p, ds, dout, qkv, T, C,
                                                                     NH, HS);
  TESSERA_CUDA_LAUNCH_CHECK("launching attention_backward_key_value_kernel");
}

}  // namespace tessera::backends::cuda
