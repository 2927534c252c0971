// Causal multi-head self-attention on the GPU, forward and backward: the plain fp32 reference
// kernels (one thread block per attention row), twin of src/backends/cpu/attention.h with the same
// layouts and saved statistics. A fused kernel is to be tested against these.
#pragma once

#include <cstdint>

#include "backends/cuda/stream.h"

namespace tessera::backends::cuda {

// out = softmax(Q K^T / sqrt(HS) + causal mask) V per (batch, head) (Vaswani et al. 2017, eq. 1).
// All pointers are device memory, fp32.
// qkv: (B, T, 3*C), laid out [q | k | v] along the last dim, each C = NH * HS wide; head h sits
//      at columns h*HS .. h*HS+HS-1 of its part (the GPT-2 / llm.c layout).
// out: (B, T, C), OVERWRITTEN; head h at columns h*HS...
// stats: (B, NH, T, 2), OVERWRITTEN with each query row's softmax statistics [max score,
//      1 / sum of exp(score - max)], all backward keeps of the probabilities.
// workspace: attention_workspace_size(B, T, C, NH) floats, clobbered (forward writes the
//      probabilities there; shared by every layer).
// Preconditions: C % NH == 0; B * NH * T < 2^31; no argument aliases another. Enqueued on
// `stream`; returns without waiting.
void attention_forward(float* out, float* stats, float* workspace, const float* qkv, int64_t B,
                       int64_t T, int64_t C, int64_t NH, Stream stream);

// dqkv: (B, T, 3*C), OVERWRITTEN (activation gradient; it does not join the residual stream).
// dout: (B, T, C). qkv, stats: as forward saw and saved them.
// Derivation, per (batch, head), with S = scale * Q K^T (scale = 1/sqrt(HS)), P = softmax(S) row
// by row over the causal prefix, O = P V:
//   dV = P^T dO                              (O is linear in V)
//   dP = dO V^T                              (O is linear in P)
//   dS = P ⊙ (dP − rowsum(dP ⊙ P))           (softmax Jacobian, row t:
//                                             dS_tj = P_tj (dP_tj − Σ_i P_ti dP_ti))
//   dQ = scale · dS K,  dK = scale · dS^T Q  (S is bilinear in Q and K)
// Masked entries have P = 0, so they get dS = 0 and contribute nothing. P is recomputed from q,
// k and stats with forward's operations (the same bits).
// workspace: attention_workspace_size(B, T, C, NH) floats (holds P and scale · dS, each
// (B, NH, T, T)); clobbered. Enqueued on `stream`; deterministic (no atomics).
void attention_backward(float* dqkv, float* workspace, const float* dout, const float* qkv,
                        const float* stats, int64_t B, int64_t T, int64_t C, int64_t NH,
                        Stream stream);

// Floats of device scratch forward and backward need for these sizes: 2 * B * NH * T * T.
int64_t attention_workspace_size(int64_t B, int64_t T, int64_t C, int64_t NH);

}  // namespace tessera::backends::cuda
