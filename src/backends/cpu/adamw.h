// AdamW: Adam with decoupled weight decay (Loshchilov & Hutter, "Decoupled Weight Decay
// Regularization", ICLR 2019), in torch.optim.AdamW's order of operations.
#pragma once

#include <cstdint>

#include "backends/adamw_hyper.h"

namespace tessera::backends::cpu {
using backends::AdamWHyper;

// One AdamW step over n elements; param, grad, m, v: (n). m and v start at zero.
//   p *= (1 - lr · weight_decay)                   only when `decay` (not biases, layernorms)
//   m  = beta1 · m + (1 - beta1) · g
//   v  = beta2 · v + (1 - beta2) · g²
//   bc1 = 1 - beta1^step,  bc2 = 1 - beta2^step
//   p -= (lr / bc1) · m / (sqrt(v) / sqrt(bc2) + eps)
// Updates param, m, v in place; grad is read only. Threaded over elements.
// Precondition: h.step >= 1.
void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n,
                  const AdamWHyper& h, bool decay);

}  // namespace tessera::backends::cpu
