// AdamW on the GPU, the twin of backends/cpu/adamw.h: the same update in the same order of
// operations (torch.optim.AdamW's), fp32 master weights and moments, with an optional bf16 working
// copy of the updated weights written by the same kernel (mixed precision).
#pragma once

#include <cstdint>

#include "backends/adamw_hyper.h"
#include "backends/cuda/stream.h"

namespace tessera::backends::cuda {

// One AdamW step over n elements of one parameter (one arena segment, as the CPU's AdamW::step
// calls it per ParamSpec); param, grad, m, v: (n) fp32 device memory; m and v start at zero.
//   p *= (1 - lr · weight_decay)                   only when `decay` (not biases, layernorms)
//   m  = beta1 · m + (1 - beta1) · g
//   v  = beta2 · v + (1 - beta2) · g²
//   bc1 = 1 - beta1^step,  bc2 = 1 - beta2^step     (on the host, in double, as the CPU does)
//   p -= (lr / bc1) · m / (sqrt(v) / sqrt(bc2) + eps)
// Updates param, m, v in place; grad is read only. When param_bf16 is not null, param_bf16 (n)
// OVERWRITTEN with the updated p rounded to the nearest bf16 (raw bits). Queued on `stream`.
// Precondition: h.step >= 1 (checked on the host: throws tessera::Error).
void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n,
                  const backends::AdamWHyper& h, bool decay, uint16_t* param_bf16, Stream stream);

}  // namespace tessera::backends::cuda
