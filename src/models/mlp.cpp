// MLP over the linear modules and the backend's GELU.
#include "models/mlp.h"

#include "backends/backend.h"

namespace tessera::models {

Mlp::Mlp(const ModelContext& ctx, ArenaPlan& plan, MlpScratch& scratch, int fc_index, int64_t rows,
         int64_t C)
    : ctx_(ctx),
      scratch_(scratch),
      C4_local_(4 * C / ctx.tp_size),
      fc_(ctx, fc_index, C, 4 * C / ctx.tp_size),
      proj_(ctx, fc_index + 2, 4 * C / ctx.tp_size, C) {
  plan.add(&fch_, {rows, C4_local_}, ctx.act);
  plan.add(&fch_gelu_, {rows, C4_local_}, ctx.act);
}

void Mlp::forward(core::Act out, core::ConstAct inp, const Rows& rows) {
  fc_.forward_gelu(fch_gelu_, fch_, inp, rows);
  proj_.forward(out, fch_gelu_, rows);
}

void Mlp::backward(float* dinp, const float* dout, core::ConstAct inp, const Rows& rows) {
  const int64_t N = rows.n();
  proj_.backward(scratch_.dfch_gelu.f32(), dout, fch_gelu_, rows);
  // d pre-GELU = gelu'(fch) ⊙ d post-GELU.
  ctx_.backend.gelu_backward(scratch_.dfch.f32(), fch_, scratch_.dfch_gelu.f32(), N * C4_local_);
  fc_.backward(dinp, scratch_.dfch.f32(), inp, rows);
}

}  // namespace tessera::models
