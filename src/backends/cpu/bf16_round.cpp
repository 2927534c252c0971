// fp32 -> bf16 -> fp32 over an array (the CPU backend's bf16 GEMM operands).
#include "backends/cpu/bf16_round.h"

namespace tessera::backends::cpu {
namespace {
// Below this many elements the thread team costs more than the pass.
constexpr int64_t kMinParallel = 1 << 15;
}  // namespace

void round_to_bf16(float* out, const float* in, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kMinParallel)
  for (int64_t i = 0; i < n; ++i) out[i] = round_to_bf16(in[i]);
}

void to_bf16(uint16_t* out, const float* in, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kMinParallel)
  for (int64_t i = 0; i < n; ++i) {
    out[i] = static_cast<uint16_t>(std::bit_cast<uint32_t>(round_to_bf16(in[i])) >> 16);
  }
}

void from_bf16(float* out, const uint16_t* in, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kMinParallel)
  for (int64_t i = 0; i < n; ++i) out[i] = std::bit_cast<float>(static_cast<uint32_t>(in[i]) << 16);
}

}  // namespace tessera::backends::cpu
