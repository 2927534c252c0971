// AdamW update, one fused threaded loop; bias corrections in double, per-element math in float
// as torch's float32 AdamW does it.

#include "backends/cpu/adamw.h"

#include <cmath>

#include "core/error.h"

namespace tessera::backends::cpu {
namespace {
constexpr int64_t kMinParallel = 1 << 15;
}  // namespace

void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n,
                  const AdamWHyper& h, bool decay) {
  TESSERA_ASSERT(h.step >= 1, "AdamW step is 1-based (bias correction divides by 1 - beta^step)");
  const double bc1 = 1.0 - std::pow(static_cast<double>(h.beta1), static_cast<double>(h.step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(h.beta2), static_cast<double>(h.step));
  const float step_size = static_cast<float>(static_cast<double>(h.lr) / bc1);
  const float bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  const float keep = decay ? 1.0f - h.lr * h.weight_decay : 1.0f;
  const float beta1 = h.beta1;
  const float beta2 = h.beta2;
  const float one_minus_beta1 = 1.0f - h.beta1;
  const float one_minus_beta2 = 1.0f - h.beta2;
  const float eps = h.eps;
  // Memory-bound (7 floats moved per element). GCC vectorises it only with -fno-math-errno: the
  // errno branch of std::sqrt otherwise keeps it scalar.
#pragma omp parallel for simd schedule(static) if (n >= kMinParallel)
  for (int64_t i = 0; i < n; ++i) {
    const float g = grad[i];
    const float mi = beta1 * m[i] + one_minus_beta1 * g;
    const float vi = beta2 * v[i] + one_minus_beta2 * g * g;
    m[i] = mi;
    v[i] = vi;
    const float denom = std::sqrt(vi) / bc2_sqrt + eps;
    param[i] = param[i] * keep - step_size * (mi / denom);
  }
}

}  // namespace tessera::backends::cpu
