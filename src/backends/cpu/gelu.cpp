// GELU (tanh form) written as x · sigmoid(2u): 0.5 · (1 + tanh(u)) = 1 / (1 + exp(-2u)), so only
// exp is needed: fast_exp (core/fast_exp.h), which vectorises; double calls std::exp.

// GCC will not if-convert float compares under trapping math (the default), which can leave a
// loop scalar; we never read FP exception flags, so this changes no value.
// Before the includes: inline helpers compiled with other options would not inline into ours.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

#include "backends/cpu/gelu.h"

#include <bit>
#include <cmath>

#include "core/fast_exp.h"

namespace tessera::backends::cpu {
using core::fast_exp;
namespace {

constexpr double kSqrt2OverPi = 0.79788456080286535588;  // sqrt(2 / pi)
constexpr double kCubic = 0.044715;
constexpr int64_t kMinParallel = 1 << 14;

// sigmoid(2u) = 0.5 · (1 + tanh(u)), with u = sqrt(2/pi) · (x + 0.044715 x³).
template <typename T>
inline T half_one_plus_tanh(T x, T& du_dx) {
  const T a = static_cast<T>(kSqrt2OverPi);
  const T b = static_cast<T>(kCubic);
  const T x2 = x * x;
  const T u = a * (x + b * x2 * x);
  du_dx = a * (T(1) + T(3) * b * x2);
  return T(1) / (T(1) + fast_exp(T(-2) * u));
}

}  // namespace

template <typename T>
void gelu_forward(T* out, const T* inp, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kMinParallel)
  for (int64_t i = 0; i < n; ++i) {
    T du_dx;
    const T s = half_one_plus_tanh(inp[i], du_dx);
    out[i] = inp[i] * s;
  }
}

// With s = sigmoid(2u) = 0.5 · (1 + tanh(u)) and gelu = x · s:
//   d gelu / dx = s + x · ds/dx = s + x · 2 s (1 - s) · du/dx,
//   du/dx = sqrt(2/pi) · (1 + 3 · 0.044715 · x²).  dinp = dout · d gelu / dx.
template <typename T>
void gelu_backward(T* dinp, const T* inp, const T* dout, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kMinParallel)
  for (int64_t i = 0; i < n; ++i) {
    const T x = inp[i];
    T du_dx;
    const T s = half_one_plus_tanh(x, du_dx);
    const T grad = s + T(2) * x * s * (T(1) - s) * du_dx;
    dinp[i] = dout[i] * grad;
  }
}

template void gelu_forward<float>(float*, const float*, int64_t);
template void gelu_forward<double>(double*, const double*, int64_t);
template void gelu_backward<float>(float*, const float*, const float*, int64_t);
template void gelu_backward<double>(double*, const double*, const double*, int64_t);

}  // namespace tessera::backends::cpu
