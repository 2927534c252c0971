// Column- and row-parallel linear modules over the backend's GEMMs and the tp mappings.
#include "models/linear.h"

#include "backends/backend.h"
#include "parallel/communicator.h"
#include "parallel/mappings.h"

namespace tessera::models {

ColumnParallelLinear::ColumnParallelLinear(const ModelContext& ctx, int weight_index, int64_t C,
                                           int64_t OC_local)
    : ctx_(ctx),
      index_(weight_index),
      C_(C),
      OC_local_(OC_local),
      w_(ctx.weight(weight_index)),
      b_(ctx.weight(weight_index + 1)),
      dw_(ctx.grad(weight_index)),
      db_(ctx.grad(weight_index + 1)) {}

void ColumnParallelLinear::forward(float* out, const float* inp, int64_t N) {
  // copy_to_tp forward: the identity.
  ctx_.backend.matmul_forward(out, inp, w_, b_, N, C_, OC_local_);
}

void ColumnParallelLinear::forward_gelu(float* out, float* pre_gelu, const float* inp, int64_t N) {
  ctx_.backend.matmul_gelu_forward(out, pre_gelu, inp, w_, b_, N, C_, OC_local_);
}

void ColumnParallelLinear::backward(float* dinp, const float* dout, const float* inp, int64_t N) {
  ctx_.backend.matmul_backward(dinp, dw_, db_, dout, inp, w_, N, C_, OC_local_);
  parallel::copy_to_tp_backward(ctx_.tp_comm, dinp, N * C_);
}

RowParallelLinear::RowParallelLinear(const ModelContext& ctx, int weight_index, int64_t C_local,
                                     int64_t OC)
    : ctx_(ctx),
      index_(weight_index),
      C_local_(C_local),
      OC_(OC),
      w_(ctx.weight(weight_index)),
      b_(ctx.weight(weight_index + 1)),
      dw_(ctx.grad(weight_index)),
      db_(ctx.grad(weight_index + 1)) {}

void RowParallelLinear::forward(float* out, const float* inp_local, int64_t N) {
  if (ctx_.tp_size == 1) {
    // One rank holds the whole sum: the bias rides in the GEMM (the same arithmetic).
    ctx_.backend.matmul_forward(out, inp_local, w_, b_, N, C_local_, OC_);
    return;
  }
  ctx_.backend.matmul_forward(out, inp_local, w_, nullptr, N, C_local_, OC_);
  parallel::reduce_from_tp_forward(ctx_.tp_comm, out, N * OC_);
  ctx_.backend.add_bias(out, b_, N, OC_);
}

void RowParallelLinear::backward(float* dinp_local, const float* dout, const float* inp_local,
                                 int64_t N) {
  ctx_.backend.matmul_backward(dinp_local, dw_, db_, dout, inp_local, w_, N, C_local_, OC_);
}

}  // namespace tessera::models
