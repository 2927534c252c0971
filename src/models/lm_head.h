// The tied, vocab-parallel LM head and its cross-entropy (Megatron-LM's vocab-parallel
// cross-entropy): logits (N, Vp_local) = x · wte_localᵀ for this rank's vocabulary rows; the
// softmax statistics (row max, then Σ exp and the target's logit) are all-reduced over tp between
// passes, so the full logits never exist on one rank. wte is the embedding's table (tied).
// Under sequence parallelism its input holds this tp rank's T / tp rows of each sequence: it is
// gathered along the sequence first (gather_from_sequence) and the logits cover all rows.
#pragma once

#include <cstdint>

#include "core/tensor.h"
#include "models/module.h"

namespace tessera::models {

class LmHead {
 public:
  // wte, dwte: the embedding's shard and its gradient; V: the real vocabulary; rows: the most
  // rows one call sees.
  LmHead(const ModelContext& ctx, ArenaPlan& plan, const float* wte, float* dwte, int64_t rows,
         int64_t C, int64_t V, int64_t vocab_start, int64_t Vp_local);

  // logits (N, Vp_local) = x (N, C) · wte_localᵀ, N = rows.n(); padding columns are
  // garbage-free zeros times x (padding rows of wte are zero). For sharded rows x is
  // (rows.n_local(), C), gathered along the sequence first (a collective over tp_comm). Also the
  // decode step, with Rows::flat(N).
  void forward(core::ConstAct x, const Rows& rows);
  // After forward: losses (N) = -log softmax(logits)[target] (0 where targets < 0); returns
  // Σ losses over targets >= 0 (host, in double) and sets *n_valid to their count.
  // targets (N) on the device. Collective over tp_comm.
  double loss(const int32_t* targets, int64_t N, int64_t* n_valid);
  // After loss: dx (N, C) OVERWRITTEN = dlogits · wte_local all-reduced over tp (for sharded
  // rows: reduce-scattered along the sequence, dx (rows.n_local(), C));
  // dwte_local += dlogitsᵀ · x (ACCUMULATES), with dlogits = (softmax - onehot) · loss_scale.
  // dlogits OVERWRITES the logits (logits() holds the gradient afterwards): one backward per
  // forward. x: what forward saw. Collective over tp_comm.
  void backward(float* dx, core::ConstAct x, const int32_t* targets, float loss_scale,
                const Rows& rows);

  const float* logits() const { return logits_.f32(); }

 private:
  // The GEMM's input: x, or for sharded rows x gathered along the sequence into the shared
  // scratch.
  core::ConstAct full_input(core::ConstAct x, const Rows& rows);

  const ModelContext& ctx_;
  const float* wte_;
  float* dwte_;
  int64_t C_, V_real_local_, vocab_start_, Vp_local_;
  core::Tensor logits_;                      // (rows, Vp_local); their gradient after backward
  core::Tensor losses_, dlosses_, row_max_;  // (rows)
  core::Tensor xent_sums_;                   // (2, rows): sumexp then target_logit
  int64_t rows_;
};

}  // namespace tessera::models
