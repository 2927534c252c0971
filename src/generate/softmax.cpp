// Row softmax with temperature (generation's sampling distribution).
#include "generate/softmax.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace tessera::generate {
using core::fast_exp;

template <typename T>
void softmax_forward(T* probs, const T* logits, int64_t n, T temperature) {
  TESSERA_ASSERT(n >= 1, "softmax: need at least one logit");
  TESSERA_ASSERT(temperature > T(0), "softmax: temperature must be positive");
  T m = logits[0];
  // Written as a select: GCC vectorizes this form of max, not std::max.
#pragma omp simd reduction(max : m)
  for (int64_t i = 1; i < n; ++i) m = logits[i] > m ? logits[i] : m;
  const T inv_temperature = T(1) / temperature;
  T sum = 0;
  // Element i is read before it is written, so probs == logits is safe.
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) {
    const T e = fast_exp((logits[i] - m) * inv_temperature);
    probs[i] = e;
    sum += e;
  }
  const T inv_sum = T(1) / sum;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) probs[i] *= inv_sum;
}

template void softmax_forward<float>(float*, const float*, int64_t, float);
template void softmax_forward<double>(double*, const double*, int64_t, double);

}  // namespace tessera::generate
