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
  plan.add(&fch_, {rows, C4_local_});
  plan.add(&fch_gelu_, {rows, C4_local_});
}

void Mlp::forward(float* out, const float* inp, const Rows& rows) {
  fc_.forward_gelu(fch_gelu_.f32(), fch_.f32(), inp, rows);
  proj_.forward(out, fch_gelu_.f32(), rows);
}

void Mlp::backward(float* dinp, const float* dout, const float* inp, const Rows& rows) {
  const int64_t N = rows.n();
  proj_.backward(scratch_.dfch_gelu.f32(), dout, fch_gelu_.f32(), rows);
  // d pre-GELU = gelu'(fch) ⊙ d post-GELU.
  ctx_.backend.gelu_backward(scratch_.dfch.f32(), fch_.f32(), scratch_.dfch_gelu.f32(),
                             N * C4_local_);
  fc_.backward(dinp, scratch_.dfch.f32(), inp, rows);
}

}  // namespace tessera::models
