// LayerNorm module: a replicated (weight, bias) pair over the last dim C; saves mean and rstd
// for backward. Every tp rank computes the same thing on the same (replicated) input, or, under
// sequence parallelism, on its own T / tp rows of each sequence (then its weight gradients are
// partial sums, all-reduced over tp inside backward).
#pragma once

#include <cstdint>

#include "core/tensor.h"
#include "models/module.h"

namespace tessera::models {

class LayerNorm {
 public:
  // weight_index: the ParamSpec row of the weight; the bias is the next row. rows: the most
  // rows one call may see (B * T of the model, B * T / tp under sequence parallelism).
  LayerNorm(const ModelContext& ctx, ArenaPlan& plan, int weight_index, int64_t rows, int64_t C);

  // out, inp: (N, C). OVERWRITES out; saves mean, rstd of the N rows.
  void forward(core::Act out, core::ConstAct inp, int64_t N);
  // dinp (N, C) ACCUMULATES (the residual stream); dweight, dbias ACCUMULATE. dout: (N, C);
  // inp: what forward saw; N = rows.n_local(). Derivation in backends/cpu/layernorm.cpp. For
  // sharded rows each tp rank saw only its rows: this call's weight gradients are summed over tp
  // before they accumulate (a collective over tp_comm), so every tp rank holds the full ones.
  void backward(float* dinp, const float* dout, core::ConstAct inp, const Rows& rows);

  int weight_index() const { return index_; }

 private:
  const ModelContext& ctx_;
  int index_;
  int64_t C_;
  float *w_, *b_, *dw_, *db_;
  core::Tensor mean_, rstd_;  // (rows)
  core::Tensor dparts_;       // (2, C): one call's dweight, dbias before the tp sum
};

}  // namespace tessera::models
