// Rounding fp32 values to the nearest bf16 and back, in place of a bf16 tensor: the CPU backend's
// mixed-precision GEMM operands (Backend::set_bf16_matmuls); and the conversions between fp32 and
// bf16 arrays (bf16 activations, Backend::bf16_to_f32 / f32_to_bf16). The result is the float whose
// bits are core::from_bf16(core::to_bf16(x)): nearest, ties to even; NaN stays a quiet NaN; values
// past bf16's largest finite become infinities.
#pragma once

#include <bit>
#include <cstdint>

namespace tessera::backends::cpu {

// Branch-free so that loops over it vectorize (core::to_bf16's NaN test is a branch).
inline float round_to_bf16(float x) {
  const uint32_t b = std::bit_cast<uint32_t>(x);
  const uint32_t nan = 0u - static_cast<uint32_t>((b & 0x7FFFFFFFu) > 0x7F800000u);
  const uint32_t nearest = (b + 0x7FFFu + ((b >> 16) & 1u)) & 0xFFFF0000u;
  const uint32_t quiet = (b | 0x00400000u) & 0xFFFF0000u;
  return std::bit_cast<float>((nearest & ~nan) | (quiet & nan));
}

// out (n) = round_to_bf16(in) element by element; out may equal in. OpenMP over large n.
void round_to_bf16(float* out, const float* in, int64_t n);

// out (n) = in rounded to bf16, as bits (core::to_bf16's: the top half of round_to_bf16(x)).
void to_bf16(uint16_t* out, const float* in, int64_t n);
// out (n) = the bf16 values in (n) as floats (exact).
void from_bf16(float* out, const uint16_t* in, int64_t n);

}  // namespace tessera::backends::cpu
