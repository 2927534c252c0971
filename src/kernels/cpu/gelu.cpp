// GELU (tanh form) written as x · sigmoid(2u): 0.5 · (1 + tanh(u)) = 1 / (1 + exp(-2u)), so only
// exp is needed. The float path uses our own branch-free exp so the loop vectorises (glibc's
// vector exp is only declared under -ffast-math); double calls std::exp.

// The clamp in exp_vec is a float compare, which GCC will not if-convert under trapping math (the
// default), leaving the loop scalar. We never read FP exception flags, so this changes no value.
// Before the includes: inline helpers compiled with other options would not inline into ours.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

#include "kernels/cpu/gelu.h"

#include <bit>
#include <cmath>

namespace tessera::kernels::cpu {
namespace {

constexpr double kSqrt2OverPi = 0.79788456080286535588;  // sqrt(2 / pi)
constexpr double kCubic = 0.044715;
constexpr int64_t kMinParallel = 1 << 14;

// exp(x) for float in a form the compiler vectorises: x = k·ln2 + r with |r| <= ln2/2 (Cody-Waite
// split of ln2), exp(r) by its degree-7 Taylor polynomial (truncation < 6e-9 relative), and 2^k
// built in the exponent bits. Inputs are clamped to [-87, 88], where 2^k stays a normal float;
// callers only need exp to saturate beyond that.
inline float exp_vec(float x) {
  x = x < -87.0f ? -87.0f : x;  // ternaries become vector min/max; std::fmin does not
  x = x > 88.0f ? 88.0f : x;
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693145751953125f;  // ln2 rounded to 16 bits: k·kLn2Hi is exact
  constexpr float kLn2Lo = 1.42860682030941723e-6f;
  constexpr float kRound = 12582912.0f;  // 1.5 · 2^23: adding it rounds to an integer
  const float k = (x * kLog2e + kRound) - kRound;
  const float r = (x - k * kLn2Hi) - k * kLn2Lo;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  return p * std::bit_cast<float>(bits);
}

inline float exp_any(float x) { return exp_vec(x); }
inline double exp_any(double x) { return std::exp(x); }

// sigmoid(2u) = 0.5 · (1 + tanh(u)), with u = sqrt(2/pi) · (x + 0.044715 x³).
template <typename T>
inline T half_one_plus_tanh(T x, T& du_dx) {
  const T a = static_cast<T>(kSqrt2OverPi);
  const T b = static_cast<T>(kCubic);
  const T x2 = x * x;
  const T u = a * (x + b * x2 * x);
  du_dx = a * (T(1) + T(3) * b * x2);
  return T(1) / (T(1) + exp_any(T(-2) * u));
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

}  // namespace tessera::kernels::cpu
