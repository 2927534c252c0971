// Vocab-parallel softmax cross-entropy on the GPU, the twin of backends/cpu/crossentropy.h: the
// same passes, arguments and rules, so the model calls either. A tp caller all-reduces between
// the passes over tp_comm (the communicator's work, not these launchers'):
//   1. xent_row_max            -> all_reduce MAX of row_max
//   2. xent_row_sumexp_target  -> all_reduce SUM of sumexp and target_logit
//   3. xent_loss               (every rank computes the same losses)
//   4. xent_backward           (local columns only; no communication)
// One block per row; no pass allocates. All pointers are device memory; work is queued on
// `stream`. The _bf16 forms take bf16 logits (raw bits as uint16_t) with every statistic fp32.
#pragma once

#include <cstdint>

#include "backends/cuda/stream.h"

namespace tessera::backends::cuda {

// Shapes: logits (N, ld) hold this rank's vocabulary columns [vocab_start, vocab_start + n_cols)
// (n_cols = V_local real columns); columns n_cols..ld-1 are padding and never read. targets (N)
// are global token ids; a negative target marks an ignored row (no loss, no gradient).
// Preconditions: N >= 0, 0 <= n_cols <= ld. The caller checks targets < V (the data loader does).

// row_max (N) = max over this rank's real columns of logits[n, :]; -infinity when n_cols == 0.
// OVERWRITES row_max.
void xent_row_max(float* row_max, const float* logits, int64_t N, int64_t n_cols, int64_t ld,
                  Stream stream);
void xent_row_max_bf16(float* row_max, const uint16_t* logits, int64_t N, int64_t n_cols,
                       int64_t ld, Stream stream);

// sumexp (N) = Σ_v exp(logits[n, v] - row_max[n]) over this rank's real columns;
// target_logit (N) = logits[n, targets[n] - vocab_start] when the target is one of this rank's
// columns, else 0 (also 0 for ignored rows), so a sum over ranks yields the target's logit.
// row_max must be the GLOBAL max (after the all-reduce). OVERWRITES sumexp and target_logit.
void xent_row_sumexp_target(float* sumexp, float* target_logit, const float* logits,
                            const int32_t* targets, const float* row_max, int64_t N, int64_t n_cols,
                            int64_t ld, int64_t vocab_start, Stream stream);
void xent_row_sumexp_target_bf16(float* sumexp, float* target_logit, const uint16_t* logits,
                                 const int32_t* targets, const float* row_max, int64_t N,
                                 int64_t n_cols, int64_t ld, int64_t vocab_start, Stream stream);

// losses (N) = log(sumexp[n]) + row_max[n] - target_logit[n] = -log softmax(logits[n])[target];
// 0 where targets[n] < 0. Inputs are the globally reduced values. OVERWRITES losses.
void xent_loss(float* losses, const float* row_max, const float* sumexp, const float* target_logit,
               const int32_t* targets, int64_t N, Stream stream);

// dlogits (N, ld), OVERWRITTEN: (softmax(logits[n]) - onehot(targets[n])) * dlosses[n] on the
// real columns; 0 on padding columns and on ignored rows. dlosses (N); row_max and sumexp (N) are
// the global values from the passes above. dlogits may be the logits buffer itself (in place).
// Derivation: loss = log Σ_v exp(z_v) - z_target, so d loss / d z_v = softmax(z)_v - [v = target],
// with softmax(z)_v = exp(z_v - row_max) / sumexp computed from the global statistics.
// The bf16 form writes bf16 dlogits, each rounded to nearest even once.
void xent_backward(float* dlogits, const float* logits, const int32_t* targets,
                   const float* row_max, const float* sumexp, const float* dlosses, int64_t N,
                   int64_t n_cols, int64_t ld, int64_t vocab_start, Stream stream);
void xent_backward_bf16(uint16_t* dlogits, const uint16_t* logits, const int32_t* targets,
                        const float* row_max, const float* sumexp, const float* dlosses, int64_t N,
                        int64_t n_cols, int64_t ld, int64_t vocab_start, Stream stream);

}  // namespace tessera::backends::cuda
