// AdamW update: one fused grid-stride kernel, memory-bound (7 floats moved per element, 2 bytes
// more with the bf16 copy). Bias corrections are computed once on the host in double, then the
// per-element math runs in fp32 with the CPU twin's operations in the CPU twin's order.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "backends/cuda/adamw.h"
#include "backends/cuda/cuda_check.h"

namespace tessera::backends::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 1 << 16;

// The per-step scalars, exactly as optim/adamw.cpp derives them.
struct AdamWScalars {
  float beta1, beta2, one_minus_beta1, one_minus_beta2, eps;
  float step_size;  // lr / bc1
  float bc2_sqrt;   // sqrt(bc2)
  float keep;       // 1 - lr · weight_decay, or 1 without decay
};

__global__ void adamw_kernel(float* param, const float* grad, float* m, float* v,
                             __nv_bfloat16* param_bf16, int64_t n, AdamWScalars s) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = grad[i];
    const float mi = s.beta1 * m[i] + s.one_minus_beta1 * g;
    const float vi = s.beta2 * v[i] + s.one_minus_beta2 * g * g;
    m[i] = mi;
    v[i] = vi;
    const float denom = sqrtf(vi) / s.bc2_sqrt + s.eps;
    const float p = param[i] * s.keep - s.step_size * (mi / denom);
    param[i] = p;
    if (param_bf16 != nullptr) param_bf16[i] = __float2bfloat16_rn(p);
  }
}

}  // namespace

void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n,
                  const backends::AdamWHyper& h, bool decay, uint16_t* param_bf16, Stream stream) {
  TESSERA_ASSERT(h.step >= 1, "AdamW step is 1-based (bias correction divides by 1 - beta^step)");
  TESSERA_ASSERT(n >= 0, "AdamW (CUDA): need n >= 0");
  if (n == 0) return;
  const double bc1 = 1.0 - std::pow(static_cast<double>(h.beta1), static_cast<double>(h.step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(h.beta2), static_cast<double>(h.step));
  AdamWScalars s{};
  s.beta1 = h.beta1;
  s.beta2 = h.beta2;
  s.one_minus_beta1 = 1.0f - h.beta1;
  s.one_minus_beta2 = 1.0f - h.beta2;
  s.eps = h.eps;
  s.step_size = static_cast<float>(static_cast<double>(h.lr) / bc1);
  s.bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  s.keep = decay ? 1.0f - h.lr * h.weight_decay : 1.0f;
  const int64_t blocks = std::min<int64_t>((n + kThreads - 1) / kThreads, kMaxBlocks);
  adamw_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      param, grad, m, v, reinterpret_cast<__nv_bfloat16*>(param_bf16), n, s);
  TESSERA_CUDA_LAUNCH_CHECK("AdamW update");
}

}  // namespace tessera::backends::cuda
