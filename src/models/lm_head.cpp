// LmHead: the tied head GEMM and the vocab-parallel cross-entropy passes.
#include "models/lm_head.h"

#include <algorithm>

#include "backends/backend.h"
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
  plan.add(&dlogits_, {rows, Vp_local});
  plan.add(&losses_, {rows});
  plan.add(&dlosses_, {rows});
  plan.add(&row_max_, {rows});
  plan.add(&xent_sums_, {2, rows});
}

void LmHead::forward(const float* x, int64_t N) {
  ctx_.backend.matmul_forward(logits_.f32(), x, wte_, nullptr, N, C_, Vp_local_);
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

void LmHead::backward(float* dx, const float* x, const int32_t* targets, float loss_scale,
                      int64_t N) {
  backends::Backend& be = ctx_.backend;
  be.fill(dlosses_.f32(), loss_scale, N);
  // dlogits (N, Vp_local) = (softmax - onehot) * dloss; padding columns 0.
  be.xent_backward(dlogits_.f32(), logits_.f32(), targets, row_max_.f32(), xent_sums_.f32(),
                   dlosses_.f32(), N, V_real_local_, Vp_local_, vocab_start_);
  // x was replicated over tp (copy_to_tp): its gradient is the sum of the ranks' parts.
  be.matmul_backward(dx, dwte_, nullptr, dlogits_.f32(), x, wte_, N, C_, Vp_local_);
  parallel::copy_to_tp_backward(ctx_.tp_comm, dx, N * C_);
}

}  // namespace tessera::models
