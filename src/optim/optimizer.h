// The model's optimizer state and step: AdamW moments in twins of the parameter arena, and global
// grad-norm clipping driven by the ParamSpec table.
#pragma once

#include "core/config.h"
#include "core/tensor.h"
#include "params/param_spec.h"

namespace tessera::backends {
class Backend;
}
namespace tessera::parallel {
class Communicator;
}

namespace tessera::optim {

// Global L2 norm of all gradients; a tp-replicated parameter is counted once. With max_norm > 0
// and the norm above it, scales every gradient by max_norm / (norm + 1e-6) (PyTorch's
// clip_grad_norm_). Returns the norm before clipping. Gradients must already be dp-averaged.
// With tp_comm (size > 1) a collective over tp_comm: sharded squares are summed over tp.
// grads live on `backend`'s device (nullptr: the CPU backend); tp_comm reduces host doubles.
double clip_grad_norm(const params::ParamSet& params, const core::Tensor& grads, double max_norm,
                      parallel::Communicator* tp_comm = nullptr,
                      backends::Backend* backend = nullptr);

class AdamW {
 public:
  // Moments on `backend`'s device (nullptr: the CPU backend), zeroed; borrowed references.
  explicit AdamW(const params::ParamSet& params, backends::Backend* backend = nullptr);
  AdamW(const AdamW&) = delete;
  AdamW& operator=(const AdamW&) = delete;

  // One update of every parameter with learning rate `lr`; `step` is 1-based (bias correction).
  // Decay applies to parameters whose spec has weight_decay.
  void step(const core::Tensor& weights, const core::Tensor& grads, double lr, int64_t step,
            const core::OptimConfig& optim);
  const core::Tensor& m() const { return m_; }
  const core::Tensor& v() const { return v_; }

 private:
  const params::ParamSet& params_;
  backends::Backend& backend_;
  core::Tensor m_, v_;
};

}  // namespace tessera::optim
