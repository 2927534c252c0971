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

  // out (n_local, C) = proj(gelu(fc(inp))), inp (n_local, C) replicated (or this rank's rows
  // of each sequence; the hidden units see all rows.n()). Collective over tp_comm. Also the
  // decode step, with Rows::flat(N) (the MLP is position-wise: decode rows are plain rows).
  void forward(core::Act out, core::ConstAct inp, const Rows& rows);
  // dinp (n_local, C) OVERWRITTEN (summed over tp); parameter gradients ACCUMULATE.
  void backward(float* dinp, const float* dout, core::ConstAct inp, const Rows& rows);

 private:
  const ModelContext& ctx_;
  MlpScratch& scratch_;
  int64_t C4_local_;
  ColumnParallelLinear fc_;
  RowParallelLinear proj_;
  core::Tensor fch_, fch_gelu_;  // (rows, 4C_local): pre- and post-GELU
};

}  // namespace tessera::models
