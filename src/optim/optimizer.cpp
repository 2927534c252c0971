// AdamW over the parameter arena and global grad-norm clipping.
#include "optim/optimizer.h"

#include <cmath>

#include "backends/backend.h"
#include "parallel/communicator.h"

namespace tessera::optim {

namespace {
backends::Backend& backend_or_cpu(backends::Backend* backend) {
  return backend ? *backend : backends::cpu_backend();
}
}  // namespace

double clip_grad_norm(const params::ParamSet& params, const core::Tensor& grads, double max_norm,
                      parallel::Communicator* tp_comm, backends::Backend* backend) {
  backends::Backend& be = backend_or_cpu(backend);
  // Sharded parameters contribute their local squares (summed over tp with tp > 1); replicated
  // ones hold identical gradients on every tp rank, so they are added once, after that sum.
  double sharded = 0, replicated = 0;
  for (int i = 0; i < params.size(); ++i) {
    const double sq = be.sum_squares(params.f32(grads, i), params.local_numel(i));
    (params.specs()[i].replicated() ? replicated : sharded) += sq;
  }
  if (tp_comm != nullptr && tp_comm->size() > 1) {
    tp_comm->all_reduce(&sharded, 1, parallel::ReduceOp::kSum);
  }
  const double norm = std::sqrt(sharded + replicated);
  if (max_norm > 0 && norm > max_norm) {
    const float scale = static_cast<float>(max_norm / (norm + 1e-6));
    be.scale_inplace(grads.f32(), scale, params.total_local_numel());
  }
  return norm;
}

AdamW::AdamW(const params::ParamSet& params, backends::Backend* backend)
    : params_(params),
      backend_(backend_or_cpu(backend)),
      m_(backend_.zeros({params.total_local_numel()})),
      v_(backend_.zeros({params.total_local_numel()})) {}

void AdamW::step(const core::Tensor& weights, const core::Tensor& grads, double lr, int64_t step,
                 const core::OptimConfig& optim) {
  const backends::AdamWHyper h{static_cast<float>(lr),
                               static_cast<float>(optim.beta1),
                               static_cast<float>(optim.beta2),
                               static_cast<float>(optim.eps),
                               static_cast<float>(optim.weight_decay),
                               step};
  for (int i = 0; i < params_.size(); ++i) {
    backend_.adamw_update(params_.f32(weights, i), params_.f32(grads, i), params_.f32(m_, i),
                          params_.f32(v_, i), params_.local_numel(i), h,
                          params_.specs()[i].weight_decay);
  }
}

}  // namespace tessera::optim
