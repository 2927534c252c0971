// Causal multi-head self-attention on the CPU, forward and backward, blocked over (batch, head)
// with OpenMP and BLAS GEMMs reading the heads straight out of the fused qkv activation.
// Neither function allocates: scratch comes from a caller-owned workspace sized once.
#pragma once

#include <cstdint>

namespace tessera::backends::cpu {

// The element type is `Real` (float or double, both instantiated) because T is the sequence
// length here, as everywhere in the project.

// out = softmax(Q K^T / sqrt(HS) + causal mask) V per (batch, head) (Vaswani et al. 2017, eq. 1).
// qkv: (B, T, 3*C), laid out [q | k | v] along the last dim, each C = NH * HS wide; head h sits
//      at columns h*HS .. h*HS+HS-1 of its part (the GPT-2 / llm.c layout).
// out: (B, T, C), OVERWRITTEN; head h at columns h*HS...
// stats: (B, NH, T, 2), OVERWRITTEN with each query row's softmax statistics, [max score,
//      1 / sum of exp(score - max)]: all backward needs to recompute the probabilities
//      P_tj = exp(S_tj - max_t) / sum_t (the flash-attention trade: 2 floats a row kept instead of
//      the (T, T) probabilities, one more Q K^T product in backward).
// workspace: attention_workspace_size(B, T, C, NH) elements; clobbered (a block of score rows per
//      thread).
// Preconditions: C % NH == 0; no argument aliases another. Threads: omp_get_max_threads(), each
// running single-threaded BLAS on its own (batch, head) blocks (tiny calls stay on the calling
// thread); results do not depend on the thread count.
template <typename Real>
void attention_forward(Real* out, Real* stats, Real* workspace, const Real* qkv, int64_t B,
                       int64_t T, int64_t C, int64_t NH);

// dqkv: (B, T, 3*C), OVERWRITTEN (activation gradient; it does not join the residual stream).
// dout: (B, T, C). qkv, stats: as forward saw and saved them.
// Derivation, per (batch, head), with S = scale * Q K^T (scale = 1/sqrt(HS)), P = softmax(S) row
// by row over the causal prefix, O = P V:
//   dV = P^T dO                              (O is linear in V)
//   dP = dO V^T                              (O is linear in P)
//   dS = P ⊙ (dP − rowsum(dP ⊙ P))           (softmax Jacobian, row t:
//                                             dS_tj = P_tj (dP_tj − Σ_i P_ti dP_ti))
//   dQ = scale · dS K,  dK = scale · dS^T Q  (S is bilinear in Q and K)
// Masked entries have P = 0, so they get dS = 0 and contribute nothing. P is recomputed block by
// block from Q, K and stats with forward's own operations, so it is forward's P bit for bit.
// workspace: attention_workspace_size(B, T, C, NH) elements; clobbered.
template <typename Real>
void attention_backward(Real* dqkv, Real* workspace, const Real* dout, const Real* qkv,
                        const Real* stats, int64_t B, int64_t T, int64_t C, int64_t NH);

// Elements of scratch forward and backward need for these sizes with omp_get_max_threads()
// threads (one slice per thread). Call it with the thread count the kernels will run with.
int64_t attention_workspace_size(int64_t B, int64_t T, int64_t C, int64_t NH);

}  // namespace tessera::backends::cpu
