// LayerNorm module over the backend's layernorm kernels.
#include "models/layernorm.h"

#include "backends/backend.h"

namespace tessera::models {

LayerNorm::LayerNorm(const ModelContext& ctx, ArenaPlan& plan, int weight_index, int64_t rows,
                     int64_t C)
    : ctx_(ctx),
      index_(weight_index),
      C_(C),
      w_(ctx.weight(weight_index)),
      b_(ctx.weight(weight_index + 1)),
      dw_(ctx.grad(weight_index)),
      db_(ctx.grad(weight_index + 1)) {
  plan.add(&mean_, {rows});
  plan.add(&rstd_, {rows});
}

void LayerNorm::forward(float* out, const float* inp, int64_t N) {
  ctx_.backend.layernorm_forward(out, mean_.f32(), rstd_.f32(), inp, w_, b_, N, C_);
}

void LayerNorm::backward(float* dinp, const float* dout, const float* inp, int64_t N) {
  ctx_.backend.layernorm_backward(dinp, dw_, db_, dout, inp, w_, mean_.f32(), rstd_.f32(), N, C_);
}

}  // namespace tessera::models
