// fast_exp: the exponential of every exp-heavy CPU kernel (attention, cross-entropy, softmax,
// GELU), because it vectorizes where std::exp on float does not. The double overload is std::exp
// (gradient checks run in double).
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

namespace tessera::core {

// e^x in float, within 1e-7 relative of the true value for -87.3 <= x <= 88 (measured worst
// 7.5e-8, i.e. about 1 ulp); results below FLT_MIN flush to 0, -inf gives 0, NaN stays NaN, and
// x > 88 gives inf. Branch-free, so GCC vectorizes loops that call it: glibc's expf is a scalar
// call per element (libmvec's vector expf needs -ffast-math), about 6x slower here.
// Method: e^x = 2^n e^r with n = round(x / ln 2) and r = x - n ln 2 in [-ln2/2, ln2/2] (ln 2 split
// in two so n * ln2_hi is exact: Cody & Waite 1980); e^r by its degree-7 Taylor polynomial
// (truncation r^8/8! < 6e-9 there); 2^n written straight into the exponent bits. The input
// clamp compares bit patterns as integers because a float compare is a possible FP trap under
// GCC's default -ftrapping-math, which stops the vectorizer.
inline float fast_exp(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693145751953125f;  // 11 significant bits: n * kLn2Hi is exact
  constexpr float kLn2Lo = 1.42860682030941723e-6f;
  constexpr float kRoundShift = 12582912.0f;  // 1.5 * 2^23: (y + it) - it rounds y to an integer
  constexpr float kLow = -104.0f;             // e^-104 is below the smallest float: the result is 0
  constexpr float kHigh = 89.0f;              // e^89 is above the largest float: the result is inf
  constexpr uint32_t kNegInfBits = 0xff800000u, kPosInfBits = 0x7f800000u;
  // As unsigned integers, negative floats order by magnitude above all positive ones, so
  // (bits(kLow), bits(-inf)] is exactly [-inf, kLow) and (bits(kHigh), bits(+inf)] is
  // (kHigh, +inf]; NaNs lie outside both and pass through.
  const uint32_t u = std::bit_cast<uint32_t>(x);
  const uint32_t below =
      0u - static_cast<uint32_t>((u > std::bit_cast<uint32_t>(kLow)) & (u <= kNegInfBits));
  const uint32_t above =
      0u - static_cast<uint32_t>((u > std::bit_cast<uint32_t>(kHigh)) & (u <= kPosInfBits));
  const float xc =
      std::bit_cast<float>((u & ~(below | above)) | (std::bit_cast<uint32_t>(kLow) & below) |
                           (std::bit_cast<uint32_t>(kHigh) & above));
  // shifted lies in [2^23, 2^24), where a float's unit in the last place is 1: its mantissa bits
  // hold n exactly (no float-to-int conversion, which NaN would make undefined).
  const float shifted = xc * kLog2e + kRoundShift;
  const float n = shifted - kRoundShift;
  const int32_t n_int =
      static_cast<int32_t>(std::bit_cast<uint32_t>(shifted) - std::bit_cast<uint32_t>(kRoundShift));
  const float r = (xc - n * kLn2Hi) - n * kLn2Lo;
  float p = 1.0f / 5040;
  p = p * r + 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  // Biased exponent n + 127: 0 encodes 0.0f (underflow), 255 encodes inf (overflow).
  const int32_t biased = std::clamp(n_int + 127, 0, 255);
  return p * std::bit_cast<float>(static_cast<uint32_t>(biased) << 23);
}

// Double keeps the library's correctly rounded exp: it is the reference precision.
inline double fast_exp(double x) { return std::exp(x); }

}  // namespace tessera::core
