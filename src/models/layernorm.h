// LayerNorm module: a replicated (weight, bias) pair over the last dim C; saves mean and rstd
// for backward. Every tp rank computes the same thing on the same (replicated) input.
#pragma once

#include <cstdint>

#include "core/tensor.h"
#include "models/module.h"

namespace tessera::models {

class LayerNorm {
 public:
  // weight_index: the ParamSpec row of the weight; the bias is the next row. rows: the most
  // rows one call may see (B * T of the model).
  LayerNorm(const ModelContext& ctx, ArenaPlan& plan, int weight_index, int64_t rows, int64_t C);

  // out, inp: (N, C). OVERWRITES out; saves mean, rstd of the N rows.
  void forward(float* out, const float* inp, int64_t N);
  // dinp (N, C) ACCUMULATES (the residual stream); dweight, dbias ACCUMULATE. dout: (N, C);
  // inp: what forward saw. Derivation in backends/cpu/layernorm.cpp.
  void backward(float* dinp, const float* dout, const float* inp, int64_t N);

  int weight_index() const { return index_; }

 private:
  const ModelContext& ctx_;
  int index_;
  int64_t C_;
  float *w_, *b_, *dw_, *db_;
  core::Tensor mean_, rstd_;  // (rows)
};

}  // namespace tessera::models
