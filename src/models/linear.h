// The tensor-parallel linear pair (Megatron-LM, Shoeybi et al. 2019, section 3), y = x Wᵀ + b
// with W (OC, C) in the PyTorch/llm.c orientation:
//  - ColumnParallelLinear splits the OUTPUT dim: rank r holds rows of W (and entries of b) for
//    its OC_local = OC / tp outputs. Input: copy_to_tp (forward identity, backward all-reduce of
//    dinp over tp, done inside backward). Output: this rank's columns only.
//  - RowParallelLinear splits the INPUT dim: rank r holds columns of W for its C_local inputs;
//    b is replicated. Output: reduce_from_tp of the partial products (forward all-reduce,
//    backward identity), THEN the bias, once.
// Both collectives are inside the modules: callers never call a mapping. At tp = 1 they cost
// nothing (parallel/mappings.h).
#pragma once

#include <cstdint>

#include "models/module.h"

namespace tessera::models {

class ColumnParallelLinear {
 public:
  // weight_index: the ParamSpec row of W (split on dim 0); the bias is the next row.
  // C: input features (full); OC_local: this rank's outputs.
  ColumnParallelLinear(const ModelContext& ctx, int weight_index, int64_t C, int64_t OC_local);

  // out (N, OC_local) = inp (N, C) · W_localᵀ + b_local. OVERWRITES out.
  void forward(float* out, const float* inp, int64_t N);
  // The same, then gelu: pre_gelu (N, OC_local) saved for backward, out = gelu(pre_gelu).
  void forward_gelu(float* out, float* pre_gelu, const float* inp, int64_t N);
  // Collective over tp_comm. dinp (N, C) = all-reduce over tp of dout · W_local (OVERWRITES;
  // the inputs were replicated, so every rank's partial gradient is summed);
  // dW_local += doutᵀ · inp, db_local += column sums of dout (ACCUMULATE). dout: (N, OC_local).
  void backward(float* dinp, const float* dout, const float* inp, int64_t N);

  int weight_index() const { return index_; }

 private:
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

  // Collective over tp_comm. out (N, OC) = Σ_tp inp_local (N, C_local) · W_localᵀ, then + b.
  // OVERWRITES out.
  void forward(float* out, const float* inp_local, int64_t N);
  // dinp_local (N, C_local) = dout · W_local (OVERWRITES; reduce_from_tp's backward is the
  // identity, so dout is the full, replicated gradient); dW_local += doutᵀ · inp_local and
  // db += column sums of dout (ACCUMULATE; db is replicated and identical on every tp rank).
  void backward(float* dinp_local, const float* dout, const float* inp_local, int64_t N);

  int weight_index() const { return index_; }

 private:
  const ModelContext& ctx_;
  int index_;
  int64_t C_local_, OC_;
  float *w_, *b_, *dw_, *db_;
};

}  // namespace tessera::models
