// bfloat16 on the host: the top half of an IEEE binary32. One definition for every host-side
// use (the bf16 gradient wire format, the MPI bf16 sum, bf16 checkpoints, the CUDA tests'
// references); header-only and memcpy-based so that nvcc-compiled host code can include it.
#pragma once

#include <cstdint>
#include <cstring>

namespace tessera::core {

// float32 -> bfloat16 bits, rounding to nearest, ties to even: add 0x7FFF plus the lowest kept
// bit, then keep the top half. A NaN stays a quiet NaN (rounding could carry its payload into an
// infinity); values above bf16's largest finite round to infinity, as IEEE rounding requires.
inline uint16_t to_bf16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((bits >> 16) | 0x0040u);
  return static_cast<uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

// bfloat16 bits -> float32 (exact).
inline float from_bf16(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
}

}  // namespace tessera::core
