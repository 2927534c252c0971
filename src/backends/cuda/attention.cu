// Plain causal attention kernels: one thread block per attention row (b, h, t), fp32 throughout,
// no atomics, so results are deterministic. They are the reference the fused cuDNN path is checked
// against, written to be obviously right rather than fast (every row re-reads K and V).
#include <cmath>

#include "backends/cuda/attention.h"
#include "backends/cuda/cuda_check.h"

namespace tessera::backends::cuda {
namespace {

// Threads per block: a multiple of the warp size (block_reduce relies on it).
constexpr int kThreads = 128;
constexpr int kWarp = 32;
static_assert(kThreads % kWarp == 0 && kThreads / kWarp <= kWarp, "block_reduce layout");

struct MaxOp {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct SumOp {
  __device__ float operator()(float a, float b) const { return a + b; }
};

// Reduces one value per thread over the whole block; every thread gets the result. `scratch`
// holds kThreads / kWarp floats of shared memory. The leading barrier lets the same scratch be
// reused by back-to-back calls (the previous call's reads are finished before it is rewritten).
// Must be called by all threads of the block.
template <typename Op>
__device__ float block_reduce(float v, Op op, float* scratch) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    v = op(v, __shfl_xor_sync(0xffffffffu, v, offset));
  }
  __syncthreads();
  if (threadIdx.x % kWarp == 0) scratch[threadIdx.x / kWarp] = v;
  __syncthreads();
  float r = scratch[0];
  for (int w = 1; w < kThreads / kWarp; ++w) r = op(r, scratch[w]);
  return r;
}

// Where attention row `row` = (b * NH + h) * T + t of a (B, NH, T, T) buffer lives in qkv.
struct RowIndex {
  int64_t b, h, t, bh;
  __device__ RowIndex(int64_t row, int64_t T, int64_t NH)
      : b(row / T / NH), h(row / T % NH), t(row % T), bh(row / T) {}
};

// Forward, block = one row (b, h, t): scores s_j = scale q_t·k_j for j <= t, their softmax into
// att[row, :] (zeros above the diagonal), then out[b, t, h, :] = Σ_j P_tj v_j.
// Dynamic shared memory: HS floats (q_t).
__global__ void attention_forward_kernel(float* out, float* att, const float* qkv, int64_t T,
                                         int64_t C, int64_t NH, int64_t HS, float scale) {
  extern __shared__ float q_row[];
  __shared__ float scratch[kThreads / kWarp];
  const RowIndex r(blockIdx.x, T, NH);
  const int64_t C3 = 3 * C;
  const float* q = qkv + (r.b * T + r.t) * C3 + r.h * HS;
  const float* k0 = qkv + r.b * T * C3 + C + r.h * HS;  // key j at k0 + j * C3
  const float* v0 = k0 + C;                             // value j at v0 + j * C3
  float* p = att + static_cast<int64_t>(blockIdx.x) * T;

  for (int64_t d = threadIdx.x; d < HS; d += blockDim.x) q_row[d] = q[d];
  __syncthreads();

  // Each thread owns the keys j = threadIdx.x + k * blockDim.x in every loop below, so p[j] is
  // only ever touched by one thread until the barrier before the output loop.
  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j <= r.t; j += blockDim.x) {
    const float* k = k0 + j * C3;
    float s = 0.0f;
    for (int64_t d = 0; d < HS; ++d) s += q_row[d] * k[d];
    s *= scale;
    p[j] = s;
    m = fmaxf(m, s);
  }
  m = block_reduce(m, MaxOp{}, scratch);  // finite: key 0 is always visible

  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j <= r.t; j += blockDim.x) {
    const float e = expf(p[j] - m);
    p[j] = e;
    sum += e;
  }
  sum = block_reduce(sum, SumOp{}, scratch);  // >= 1: the max term is exp(0)
  const float inv = 1.0f / sum;
  for (int64_t j = threadIdx.x; j < T; j += blockDim.x) p[j] = j <= r.t ? p[j] * inv : 0.0f;
  // The barrier makes the row's global writes visible to the whole block.
  __syncthreads();

  float* o = out + (r.b * T + r.t) * C + r.h * HS;
  for (int64_t d = threadIdx.x; d < HS; d += blockDim.x) {
    float acc = 0.0f;
    for (int64_t j = 0; j <= r.t; ++j) acc += p[j] * v0[j * C3 + d];
    o[d] = acc;
  }
}

// Backward stage 1, block = one row (b, h, t): dP_tj = dO_t·v_j, then
// dS_tj = scale P_tj (dP_tj − Σ_i P_ti dP_ti) into ds[row, :] (zeros above the diagonal), then
// dQ_t = Σ_j dS_tj k_j (scale already folded into dS). Dynamic shared memory: HS floats (dO_t).
__global__ void attention_backward_query_kernel(float* dqkv, float* ds_all, const float* dout,
                                                const float* qkv, const float* att, int64_t T,
                                                int64_t C, int64_t NH, int64_t HS, float scale) {
  extern __shared__ float dout_row[];
  __shared__ float scratch[kThreads / kWarp];
  const RowIndex r(blockIdx.x, T, NH);
  const int64_t C3 = 3 * C;
  const float* k0 = qkv + r.b * T * C3 + C + r.h * HS;
  const float* v0 = k0 + C;
  const float* p = att + static_cast<int64_t>(blockIdx.x) * T;
  float* ds = ds_all + static_cast<int64_t>(blockIdx.x) * T;

  const float* dout_t = dout + (r.b * T + r.t) * C + r.h * HS;
  for (int64_t d = threadIdx.x; d < HS; d += blockDim.x) dout_row[d] = dout_t[d];
  __syncthreads();

  // As in forward, thread threadIdx.x alone owns ds[j] for its j until the barrier below.
  float partial = 0.0f;
  for (int64_t j = threadIdx.x; j <= r.t; j += blockDim.x) {
    const float* v = v0 + j * C3;
    float dp = 0.0f;
    for (int64_t d = 0; d < HS; ++d) dp += dout_row[d] * v[d];
    ds[j] = dp;
    partial += p[j] * dp;
  }
  const float dot = block_reduce(partial, SumOp{}, scratch);
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
// dV_j = Σ_{t>=j} P_tj dO_t (rows t < j are masked: P = dS = 0 there). Reads stage 1's ds.
__global__ void attention_backward_key_value_kernel(float* dqkv, const float* ds_all,
                                                    const float* dout, const float* qkv,
                                                    const float* att, int64_t T, int64_t C,
                                                    int64_t NH, int64_t HS) {
  const RowIndex r(blockIdx.x, T, NH);  // r.t is the key index j here
  const int64_t j = r.t;
  const int64_t C3 = 3 * C;
  const float* q0 = qkv + r.b * T * C3 + r.h * HS;  // query t at q0 + t * C3
  const float* dout0 = dout + r.b * T * C + r.h * HS;
  const float* p_col = att + r.bh * T * T + j;  // P_tj at p_col[t * T]
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
  TESSERA_ASSERT(C / NH * static_cast<int64_t>(sizeof(float)) <= 48 * 1024,
                 "attention: head size HS exceeds the 48 KiB shared-memory row");
}

}  // namespace

int64_t attention_workspace_size(int64_t B, int64_t T, int64_t /*C*/, int64_t NH) {
  return B * NH * T * T;
}

void attention_forward(float* out, float* att, float* /*workspace*/, const float* qkv, int64_t B,
                       int64_t T, int64_t C, int64_t NH, Stream stream) {
  check_sizes(B, T, C, NH);
  const int64_t HS = C / NH;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  const auto rows = static_cast<unsigned>(B * NH * T);
  attention_forward_kernel<<<rows, kThreads, HS * sizeof(float), stream>>>(out, att, qkv, T, C, NH,
                                                                           HS, scale);
  TESSERA_CUDA_LAUNCH_CHECK("launching attention_forward_kernel");
}

void attention_backward(float* dqkv, float* workspace, const float* dout, const float* qkv,
                        const float* att, int64_t B, int64_t T, int64_t C, int64_t NH,
                        Stream stream) {
  check_sizes(B, T, C, NH);
  const int64_t HS = C / NH;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  const auto rows = static_cast<unsigned>(B * NH * T);
  attention_backward_query_kernel<<<rows, kThreads, HS * sizeof(float), stream>>>(
      dqkv, workspace, dout, qkv, att, T, C, NH, HS, scale);
  TESSERA_CUDA_LAUNCH_CHECK("launching attention_backward_query_kernel");
  attention_backward_key_value_kernel<<<rows, kThreads, 0, stream>>>(dqkv, workspace, dout, qkv,
                                                                     att, T, C, NH, HS);
  TESSERA_CUDA_LAUNCH_CHECK("launching attention_backward_key_value_kernel");
}

}  // namespace tessera::backends::cuda
