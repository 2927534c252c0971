// Column- and row-parallel linear modules over the backend's GEMMs and the tp mappings.
#include "models/linear.h"

#include "backends/backend.h"
#include "core/error.h"
#include "parallel/communicator.h"
#include "parallel/mappings.h"

namespace tessera::models {
namespace {

// The shared (B*T, C) buffer of sequence parallelism, checked to hold `numel` floats.
float* seq_buffer(const ModelContext& ctx, core::Tensor SequenceScratch::*which, int64_t numel) {
  TESSERA_ASSERT(ctx.seq != nullptr,
                 "running sharded rows on a model built with sequence "
                 "parallelism (ModelContext::seq)");
  const core::Tensor& t = ctx.seq->*which;
  TESSERA_ASSERT(numel <= t.numel(), "fitting a full sequence in the sequence-parallel scratch");
  return t.f32();
}

}  // namespace

const float* gather_sequence(const ModelContext& ctx, core::ConstAct inp, const Rows& rows,
                             int64_t C) {
  float* full = seq_buffer(ctx, &SequenceScratch::full, rows.n() * C);
  const float* local = inp.is_f32() ? inp.f32() : nullptr;
  if (local == nullptr) {
    float* wide = ctx.f32_rows(rows.n_local() * C);
    ctx.backend.convert(wide, inp, rows.n_local() * C);
    local = wide;
  }
  parallel::gather_from_sequence_forward(ctx.tp_comm, full, local, rows.B, rows.T, C);
  return full;
}

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

core::ConstAct ColumnParallelLinear::full_input(core::ConstAct inp, const Rows& rows) {
  if (!rows.seq_sharded()) return inp;  // copy_to_tp forward: the identity
  return gather_sequence(ctx_, inp, rows, C_);
}

void ColumnParallelLinear::forward(core::Act out, core::ConstAct inp, const Rows& rows) {
  ctx_.backend.matmul_forward(out, full_input(inp, rows), w_, b_, rows.n(), C_, OC_local_);
}

void ColumnParallelLinear::forward_gelu(core::Act out, core::Act pre_gelu, core::ConstAct inp,
                                        const Rows& rows) {
  ctx_.backend.matmul_gelu_forward(out, pre_gelu, full_input(inp, rows), w_, b_, rows.n(), C_,
                                   OC_local_);
}

void ColumnParallelLinear::backward(float* dinp, const float* dout, core::ConstAct inp,
                                    const Rows& rows) {
  const int64_t N = rows.n();
  if (!rows.seq_sharded()) {
    ctx_.backend.matmul_backward(dinp, dw_, db_, dout, inp, w_, N, C_, OC_local_);
    ctx_.poll();
    parallel::copy_to_tp_backward(ctx_.tp_comm, dinp, N * C_);
    return;
  }
  // The layer keeps only its sharded input; gather it again (one all-gather instead of a saved
  // (B*T, C) tensor per layer), then reduce-scatter the partial input gradient.
  const core::ConstAct x = full_input(inp, rows);
  float* dfull = seq_buffer(ctx_, &SequenceScratch::dfull, N * C_);
  ctx_.backend.matmul_backward(dfull, dw_, db_, dout, x, w_, N, C_, OC_local_);
  ctx_.poll();
  parallel::gather_from_sequence_backward(ctx_.tp_comm, dinp, dfull, rows.B, rows.T, C_);
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

void RowParallelLinear::forward(core::Act out, core::ConstAct inp_local, const Rows& rows) {
  const int64_t N = rows.n();
  backends::Backend& be = ctx_.backend;
  if (ctx_.tp_size == 1) {
    // One rank holds the whole sum: the bias rides in the GEMM (the same arithmetic).
    be.matmul_forward(out, inp_local, w_, b_, N, C_local_, OC_);
    return;
  }
  // The sum over tp and the bias in fp32; bf16 activations are rounded once, at the end.
  const int64_t n_out = rows.n_local() * OC_;
  float* sum = out.is_f32() ? out.f32() : ctx_.f32_rows(rows.seq_sharded() ? n_out : N * OC_);
  if (!rows.seq_sharded()) {
    be.matmul_forward(sum, inp_local, w_, nullptr, N, C_local_, OC_);
    parallel::reduce_from_tp_forward(ctx_.tp_comm, sum, N * OC_);
  } else {
    float* partial = seq_buffer(ctx_, &SequenceScratch::full, N * OC_);
    be.matmul_forward(partial, inp_local, w_, nullptr, N, C_local_, OC_);
    parallel::reduce_scatter_to_sequence_forward(ctx_.tp_comm, sum, partial, rows.B, rows.T, OC_);
  }
  be.add_bias(sum, b_, rows.n_local(), OC_);
  if (!out.is_f32()) be.convert(out, sum, n_out);
}

void RowParallelLinear::backward(float* dinp_local, const float* dout, core::ConstAct inp_local,
                                 const Rows& rows) {
  const int64_t N = rows.n();
  const float* d = dout;
  if (rows.seq_sharded()) {
    float* full = seq_buffer(ctx_, &SequenceScratch::full, N * OC_);
    parallel::reduce_scatter_to_sequence_backward(ctx_.tp_comm, full, dout, rows.B, rows.T, OC_);
    d = full;
  }
  ctx_.backend.matmul_backward(dinp_local, dw_, db_, d, inp_local, w_, N, C_local_, OC_);
  ctx_.poll();
}

}  // namespace tessera::models
