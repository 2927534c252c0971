// MLP: a column-parallel fc (C -> 4C, this rank's 4C/tp hidden units) with the GELU epilogue,
// then a row-parallel projection back to C whose reduce over tp sums the hidden units' parts.
#pragma once

#include <cstdint>

#include "core/tensor.h"
#include "models/linear.h"
#include "models/module.h"

namespace tessera::models {

// Backward scratch shared by every layer.
struct MlpScratch {
  core::Tensor dfch;       // (B*T, 4C_local): gradient of the pre-GELU activation
  core::Tensor dfch_gelu;  // (B*T, 4C_local)
};

class Mlp {
 public:
  // fc_index: the ParamSpec row of the fc weight; then fc bias, proj weight, proj bias.
  Mlp(const ModelContext& ctx, ArenaPlan& plan, MlpScratch& scratch, int fc_index, int64_t rows,
      int64_t C);

  // out (N, C) = proj(gelu(fc(inp))), inp (N, C) replicated. Collective over tp_comm. Also the
  // decode step (the MLP is position-wise: decode rows are plain rows).
  void forward(float* out, const float* inp, int64_t N);
  // dinp (N, C) OVERWRITTEN (all-reduced over tp); parameter gradients ACCUMULATE.
  void backward(float* dinp, const float* dout, const float* inp, int64_t N);

 private:
  const ModelContext& ctx_;
  MlpScratch& scratch_;
  int64_t C4_local_;
  ColumnParallelLinear fc_;
  RowParallelLinear proj_;
  core::Tensor fch_, fch_gelu_;  // (rows, 4C_local): pre- and post-GELU
};

}  // namespace tessera::models
