// The tensor-parallel linear pair (Megatron-LM, Shoeybi et al. 2019, section 3), y = x Wᵀ + b
// with W (OC, C) in the PyTorch/llm.c orientation:
//  - ColumnParallelLinear splits the OUTPUT dim: rank r holds rows of W (and entries of b) for
//    its OC_local = OC / tp outputs. Input: copy_to_tp (forward identity, backward all-reduce of
//    dinp over tp, done inside backward), or, with the rows sharded along the sequence,
//    gather_from_sequence (forward all-gather, backward reduce-scatter). Output: this rank's
//    columns only, all rows.
//  - RowParallelLinear splits the INPUT dim: rank r holds columns of W for its C_local inputs;
//    b is replicated. Output: reduce_from_tp of the partial products (forward all-reduce,
//    backward identity), or with sharded rows reduce_scatter_to_sequence (forward
//    reduce-scatter, backward all-gather), THEN the bias, once.
// Both collectives are inside the modules: callers never call a mapping. At tp = 1 they cost
// nothing (parallel/mappings.h). Rows (models/module.h) says whether a call's rows are sharded.
#pragma once

#include <cstdint>

#include "core/act.h"
#include "models/module.h"

namespace tessera::models {

// inp (rows.n_local(), C) gathered along the sequence into ctx.seq->full, fp32 (rows.n(), C);
// bf16 activations are widened into ctx.act_f32 first. Collective over tp_comm. The input of a
// column-parallel GEMM, and of the LM head, under sequence parallelism.
const float* gather_sequence(const ModelContext& ctx, core::ConstAct inp, const Rows& rows,
                             int64_t C);

class ColumnParallelLinear {
 public:
  // weight_index: the ParamSpec row of W (split on dim 0); the bias is the next row.
  // C: input features (full); OC_local: this rank's outputs.
  ColumnParallelLinear(const ModelContext& ctx, int weight_index, int64_t C, int64_t OC_local);

  // out (rows.n(), OC_local) = inp · W_localᵀ + b_local, inp (rows.n_local(), C) (all rows
  // unless sharded: then gathered along the sequence first). OVERWRITES out. Collective over
  // tp_comm when the rows are sharded.
  void forward(core::Act out, core::ConstAct inp, const Rows& rows);
  // The same, then gelu: pre_gelu (rows.n(), OC_local) saved for backward, out = gelu(pre_gelu).
  void forward_gelu(core::Act out, core::Act pre_gelu, core::ConstAct inp, const Rows& rows);
  // Collective over tp_comm. dinp (rows.n_local(), C) = dout · W_local summed over tp: the
  // inputs were replicated (or gathered), so every rank's partial gradient is all-reduced (or
  // reduce-scattered along the sequence) (OVERWRITES); dW_local += doutᵀ · inp, db_local +=
  // column sums of dout (ACCUMULATE). dout: (rows.n(), OC_local); inp: what forward saw.
  void backward(float* dinp, const float* dout, core::ConstAct inp, const Rows& rows);

  int weight_index() const { return index_; }

 private:
  // The GEMM's input: inp (copy_to_tp forward, the identity) or, for sharded rows, inp gathered
  // along the sequence into the shared scratch (fp32).
  core::ConstAct full_input(core::ConstAct inp, const Rows& rows);

  const ModelContext& ctx_;
  int index_;
  int64_t C_, OC_local_;
  float *w_, *b_, *dw_, *db_;
};

class RowParallelLinear {
 public:
  // weight_index: the ParamSpec row of W (split on dim 1); the bias (replicated) is the next.
  // C_local: this rank's input features; OC: outputs (full).
  RowParallelLinear(const ModelContext& ctx, int weight_index, int64_t C_local, int64_t OC);

  // Collective over tp_comm. out (rows.n_local(), OC) = Σ_tp inp_local (rows.n(), C_local) ·
  // W_localᵀ (for sharded rows: this rank's rows of the sum), then + b. OVERWRITES out.
  void forward(core::Act out, core::ConstAct inp_local, const Rows& rows);
  // dinp_local (rows.n(), C_local) = dout · W_local (OVERWRITES; reduce_from_tp's backward is
  // the identity, so dout is the full, replicated gradient; for sharded rows dout
  // (rows.n_local(), OC) is first gathered along the sequence: a collective over tp_comm);
  // dW_local += doutᵀ · inp_local and db += column sums of dout (ACCUMULATE; db is replicated and
  // identical on every tp rank, taken over all rows in both cases).
  void backward(float* dinp_local, const float* dout, core::ConstAct inp_local, const Rows& rows);

  int weight_index() const { return index_; }

 private:
  const ModelContext& ctx_;
  int index_;
  int64_t C_local_, OC_;
  float *w_, *b_, *dw_, *db_;
};

}  // namespace tessera::models
