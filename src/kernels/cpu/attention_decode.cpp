// One-query attention over a KV cache; the same math as attention_forward's row n_ctx-1.
#include "kernels/cpu/attention_decode.h"

#include <cmath>

namespace tessera::kernels::cpu {

void attention_decode(float* out, float* scratch, const float* q, const float* k_cache,
                      const float* v_cache, int64_t n_ctx, int64_t C, int64_t NH) {
  const int64_t HS = C / NH;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  for (int64_t h = 0; h < NH; ++h) {
    const float* qh = q + h * HS;
    float max = -INFINITY;
    for (int64_t t = 0; t < n_ctx; ++t) {
      const float* k = k_cache + t * C + h * HS;
      float dot = 0;
      for (int64_t i = 0; i < HS; ++i) dot += qh[i] * k[i];
      scratch[t] = dot * scale;
      max = std::fmax(max, scratch[t]);
    }
    float sum = 0;
    for (int64_t t = 0; t < n_ctx; ++t) {
      scratch[t] = std::exp(scratch[t] - max);
      sum += scratch[t];
    }
    float* oh = out + h * HS;
    for (int64_t i = 0; i < HS; ++i) oh[i] = 0;
    for (int64_t t = 0; t < n_ctx; ++t) {
      const float p = scratch[t] / sum;
      const float* v = v_cache + t * C + h * HS;
      for (int64_t i = 0; i < HS; ++i) oh[i] += p * v[i];
    }
  }
}

}  // namespace tessera::kernels::cpu
