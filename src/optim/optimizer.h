// The model's optimizer state and step: AdamW moments in twins of the parameter arena, and global
// grad-norm clipping driven by the ParamSpec table.
#pragma once

#include "core/config.h"
#include "core/tensor.h"
#include "models/param_spec.h"

namespace tessera::parallel {
class Communicator;
}

namespace tessera::optim {

// Global L2 norm of all gradients; a tp-replicated parameter is counted once. With max_norm > 0
// and the norm above it, scales every gradient by max_norm / (norm + 1e-6) (PyTorch's
// clip_grad_norm_). Returns the norm before clipping. Gradients must already be dp-averaged.
// With tp_comm (size > 1) a collective over tp_comm: sharded squares are summed over tp.
double clip_grad_norm(const models::ParamSet& params, const core::Tensor& grads, double max_norm,
                      parallel::Communicator* tp_comm = nullptr);

class AdamW {
 public:
  explicit AdamW(const models::ParamSet& params);
  AdamW(const AdamW&) = delete;
  AdamW& operator=(const AdamW&) = delete;

  // One update of every parameter with learning rate `lr`; `step` is 1-based (bias correction).
  // Decay applies to parameters whose spec has weight_decay.
  void step(const core::Tensor& weights, const core::Tensor& grads, double lr, int64_t step,
            const core::OptimConfig& optim);
  const core::Tensor& m() const { return m_; }
  const core::Tensor& v() const { return v_; }

 private:
  const models::ParamSet& params_;
  core::Tensor m_, v_;
};

}  // namespace tessera::optim
