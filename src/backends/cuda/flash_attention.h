// Fused causal attention on the GPU, forward and backward, in the manner of FlashAttention-2 (Dao
// 2023): keys and values (forward) or queries and output gradients (backward) pass through shared
// memory a tile at a time and the softmax is computed online, so no (T, T) tensor is ever
// written. The same layouts and saved statistics as the plain kernels (attention.h), which are its
// reference (tests/cuda/flash_attention_test.cu; the kernels' logic also runs in CI under an
// emulation: flash_attention_kernels.cuh); fp32 arithmetic (on fp32 or bf16 activations) and
// deterministic (no atomics: dQ and dK/dV are separate kernels, each owning its outputs).
#pragma once

#include <cstdint>

#include "backends/cuda/stream.h"

namespace tessera::backends::cuda {

// Whether the fused kernels take head size HS (32, 64 or 128: a warp's lanes own HS / 32 channels
// each); the plain kernels take any.
bool flash_attention_supports(int64_t HS);

// As attention_forward (attention.h): out (B, T, C) and stats (B, NH, T, 2) = [max score,
// 1 / sum of exp(score - max)] OVERWRITTEN; the statistics are the online softmax's, equal to the
// plain kernel's up to float rounding. No workspace.
// Preconditions: flash_attention_supports(C / NH); B * NH < 2^16 (the grid's y dimension);
// T < 2^31. Enqueued on `stream`.
void flash_attention_forward(float* out, float* stats, const float* qkv, int64_t B, int64_t T,
                             int64_t C, int64_t NH, Stream stream);

// As attention_backward: dqkv (B, T, 3C) OVERWRITTEN, from dout, qkv and forward's stats; the
// probabilities are recomputed from the statistics tile by tile. workspace:
// flash_attention_workspace_size floats (each query row's Σ_j P_tj dP_tj), clobbered.
void flash_attention_backward(float* dqkv, float* workspace, const float* dout, const float* qkv,
                              const float* stats, int64_t B, int64_t T, int64_t C, int64_t NH,
                              Stream stream);

// bf16 activations (raw bits as uint16_t): qkv read exactly, out rounded to nearest even once;
// stats, dout, dqkv and the workspace fp32. The same arithmetic as the fp32 kernels on qkv widened
// to fp32 (the emulated test checks it bit for bit).
void flash_attention_forward_bf16(uint16_t* out, float* stats, const uint16_t* qkv, int64_t B,
                                  int64_t T, int64_t C, int64_t NH, Stream stream);
void flash_attention_backward_bf16(float* dqkv, float* workspace, const float* dout,
                                   const uint16_t* qkv, const float* stats, int64_t B, int64_t T,
                                   int64_t C, int64_t NH, Stream stream);
// B * NH * T floats: one per query row.
int64_t flash_attention_workspace_size(int64_t B, int64_t T, int64_t C, int64_t NH);

}  // namespace tessera::backends::cuda
