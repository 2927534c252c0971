// Softmax cross-entropy over a vocabulary that may be split across tensor-parallel ranks, so the
// full logits never need to exist on one rank (Megatron-LM's vocab-parallel cross-entropy).
// It runs in passes; a tp caller all-reduces between them:
//   1. xent_row_max            -> all_reduce MAX over tp_comm of row_max
//   2. xent_row_sumexp_target  -> all_reduce SUM over tp_comm of sumexp and target_logit
//   3. xent_loss               (every rank computes the same losses)
//   4. xent_backward           (local columns only; no communication)
// With tp = 1 the passes run back to back. Rows are threaded with OpenMP; no pass allocates.
#pragma once

#include <cstdint>

namespace tessera::backends::cpu {

// Shapes: logits (N, ld) hold this rank's vocabulary columns [vocab_start, vocab_start + n_cols)
// (n_cols = V_local real columns); columns n_cols..ld-1 are padding and never read. targets (N)
// are global token ids; a negative target marks an ignored row (no loss, no gradient).
// Preconditions: 0 <= n_cols <= ld. The caller checks targets < V (the data loader does).

// row_max (N) = max over this rank's real columns of logits[n, :]; -infinity when n_cols == 0.
template <typename T>
void xent_row_max(T* row_max, const T* logits, int64_t N, int64_t n_cols, int64_t ld);

// sumexp (N) = Σ_v exp(logits[n, v] - row_max[n]) over this rank's real columns;
// target_logit (N) = logits[n, targets[n] - vocab_start] when the target is one of this rank's
// columns, else 0 (also 0 for ignored rows), so a sum over ranks yields the target's logit.
// row_max must be the GLOBAL max (after the all-reduce), so every rank's terms share one shift.
template <typename T>
void xent_row_sumexp_target(T* sumexp, T* target_logit, const T* logits, const int32_t* targets,
                            const T* row_max, int64_t N, int64_t n_cols, int64_t ld,
                            int64_t vocab_start);

// losses (N) = log(sumexp[n]) + row_max[n] - target_logit[n] = -log softmax(logits[n])[target];
// 0 where targets[n] < 0. Inputs are the globally reduced values.
template <typename T>
void xent_loss(T* losses, const T* row_max, const T* sumexp, const T* target_logit,
               const int32_t* targets, int64_t N);

// dlogits (N, ld), OVERWRITTEN: (softmax(logits[n]) - onehot(targets[n])) * dlosses[n] on the
// real columns; 0 on padding columns and on ignored rows. dlosses (N); row_max and sumexp (N) are
// the global values from the passes above. dlogits may be the logits buffer itself (in place).
// Derivation: loss = log Σ_v exp(z_v) - z_target, so d loss / d z_v = softmax(z)_v - [v = target],
// with softmax(z)_v = exp(z_v - row_max) / sumexp computed from the global statistics.
template <typename T>
void xent_backward(T* dlogits, const T* logits, const int32_t* targets, const T* row_max,
                   const T* sumexp, const T* dlosses, int64_t N, int64_t n_cols, int64_t ld,
                   int64_t vocab_start);

}  // namespace tessera::backends::cpu
