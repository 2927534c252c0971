// fp32 -> bf16 -> fp32 over an array (the CPU backend's bf16 GEMM operands).
#include "backends/cpu/bf16_round.h"

namespace tessera::backends::cpu {

void round_to_bf16(float* out, const float* in, int64_t n) {
  // Below this many elements the thread team costs more than the pass.
  constexpr int64_t kMinParallel = 1 << 15;
#pragma omp parallel for simd schedule(static) if (n >= kMinParallel)
  for (int64_t i = 0; i < n; ++i) out[i] = round_to_bf16(in[i]);
}

}  // namespace tessera::backends::cpu
