// LayerNorm module over the backend's layernorm kernels.
#include "models/layernorm.h"

#include "backends/backend.h"
#include "parallel/communicator.h"

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
  plan.add(&dparts_, {2, C});
}

void LayerNorm::forward(core::Act out, core::ConstAct inp, int64_t N) {
  ctx_.backend.layernorm_forward(out, mean_.f32(), rstd_.f32(), inp, w_, b_, N, C_);
}

void LayerNorm::backward(float* dinp, const float* dout, core::ConstAct inp, const Rows& rows) {
  const int64_t N = rows.n_local();
  if (!rows.seq_sharded()) {
    ctx_.backend.layernorm_backward(dinp, dw_, db_, dout, inp, w_, mean_.f32(), rstd_.f32(), N, C_);
    return;
  }
  // dweight = Σ over all rows of dout ⊙ x̂ and dbias = Σ dout: this rank's rows give a partial
  // sum. This call's part alone is summed over tp (the buffers accumulate over micro-batches),
  // as Megatron-LM all-reduces the gradients of its sequence-parallel parameters.
  backends::Backend& be = ctx_.backend;
  float* dw_part = dparts_.f32();
  float* db_part = dparts_.f32() + C_;
  be.fill_zero(dw_part, 2 * C_ * sizeof(float));
  be.layernorm_backward(dinp, dw_part, db_part, dout, inp, w_, mean_.f32(), rstd_.f32(), N, C_);
  ctx_.tp_comm.all_reduce_sum(dw_part, 2 * C_);
  be.add_inplace(dw_, dw_part, C_);
  be.add_inplace(db_, db_part, C_);
}

}  // namespace tessera::models
