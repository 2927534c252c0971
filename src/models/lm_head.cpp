// LmHead: the tied head GEMM and the vocab-parallel cross-entropy passes.
#include "models/lm_head.h"

#include <algorithm>

#include "backends/backend.h"
#include "core/error.h"
#include "models/linear.h"
#include "parallel/communicator.h"
#include "parallel/mappings.h"

namespace tessera::models {

LmHead::LmHead(const ModelContext& ctx, ArenaPlan& plan, const float* wte, float* dwte,
               int64_t rows, int64_t C, int64_t V, int64_t vocab_start, int64_t Vp_local)
    : ctx_(ctx),
      wte_(wte),
      dwte_(dwte),
      C_(C),
      V_real_local_(std::clamp<int64_t>(V - vocab_start, 0, Vp_local)),
      vocab_start_(vocab_start),
      Vp_local_(Vp_local),
      rows_(rows) {
  plan.add(&logits_, {rows, Vp_local});
  plan.add(&losses_, {rows});
  if (!ctx.inference) plan.add(&dlosses_, {rows});
  plan.add(&row_max_, {rows});
  plan.add(&xent_sums_, {2, rows});
}

core::ConstAct LmHead::full_input(core::ConstAct x, const Rows& rows) {
  if (!rows.seq_sharded()) return x;
  return gather_sequence(ctx_, x, rows, C_);
}

void LmHead::forward(core::ConstAct x, const Rows& rows) {
  ctx_.backend.matmul_forward(logits_.f32(), full_input(x, rows), wte_, nullptr, rows.n(), C_,
                              Vp_local_);
}

double LmHead::loss(const int32_t* targets, int64_t N, int64_t* n_valid) {
  float* sumexp = xent_sums_.f32();
  float* target_logit = xent_sums_.f32() + N;  // packed behind sumexp: one all-reduce for both
  backends::Backend& be = ctx_.backend;
  be.xent_row_max(row_max_.f32(), logits_.f32(), N, V_real_local_, Vp_local_);
  ctx_.tp_comm.all_reduce_max(row_max_.f32(), N);
  be.xent_row_sumexp_target(sumexp, target_logit, logits_.f32(), targets, row_max_.f32(), N,
                            V_real_local_, Vp_local_, vocab_start_);
  ctx_.tp_comm.all_reduce_sum(xent_sums_.f32(), 2 * N);
  be.xent_loss(losses_.f32(), row_max_.f32(), sumexp, target_logit, targets, N);
  int64_t count = 0;
  const double sum = be.sum_losses(losses_.f32(), targets, N, &count);
  if (n_valid) *n_valid = count;
  return sum;
}

void LmHead::backward(float* dx, core::ConstAct x, const int32_t* targets, float loss_scale,
                      const Rows& rows) {
  backends::Backend& be = ctx_.backend;
  const int64_t N = rows.n();
  be.fill(dlosses_.f32(), loss_scale, N);
  // dlogits (N, Vp_local) = (softmax - onehot) * dloss; padding columns 0. In place over the
  // logits (llm.c's fused classifier does the same): nothing reads them after the loss, and a
  // second (N, Vp_local) tensor is the model's largest (124M, 4096 rows: 786 MiB).
  float* dlogits = logits_.f32();
  be.xent_backward(dlogits, logits_.f32(), targets, row_max_.f32(), xent_sums_.f32(),
                   dlosses_.f32(), N, V_real_local_, Vp_local_, vocab_start_);
  if (!rows.seq_sharded()) {
    // x was replicated over tp (copy_to_tp): its gradient is the sum of the ranks' parts.
    be.matmul_backward(dx, dwte_, nullptr, dlogits, x, wte_, N, C_, Vp_local_);
    parallel::copy_to_tp_backward(ctx_.tp_comm, dx, N * C_);
    return;
  }
  // x was gathered along the sequence: gather it again (it is not kept), and reduce-scatter the
  // ranks' parts of its gradient.
  const core::ConstAct x_full = full_input(x, rows);
  TESSERA_ASSERT(N * C_ <= ctx_.seq->dfull.numel(),
                 "fitting the head's input gradient in the sequence-parallel scratch");
  float* dfull = ctx_.seq->dfull.f32();
  be.matmul_backward(dfull, dwte_, nullptr, dlogits, x_full, wte_, N, C_, Vp_local_);
  parallel::gather_from_sequence_backward(ctx_.tp_comm, dx, dfull, rows.B, rows.T, C_);
}

}  // namespace tessera::models
