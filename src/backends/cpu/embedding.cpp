// Token (vocab-sharded) and position embeddings, forward and backward. Backward scatters run
// over disjoint column blocks, so no two threads ever add into the same element.
#include "backends/cpu/embedding.h"

#include <algorithm>

namespace tessera::backends::cpu {
namespace {
// Columns per backward task: a multiple of a cache line, long enough to vectorise.
constexpr int64_t kColumnBlock = 64;
constexpr int64_t kMinParallel = 1 << 14;
}  // namespace

template <typename T>
void embedding_forward(T* out, const int32_t* tokens, const T* wte_local, int64_t N, int64_t C,
                       int64_t vocab_start, int64_t V_local) {
#pragma omp parallel for schedule(static) if (N * C >= kMinParallel)
  for (int64_t n = 0; n < N; ++n) {
    const int64_t row = static_cast<int64_t>(tokens[n]) - vocab_start;
    T* y = out + n * C;
    if (row >= 0 && row < V_local) {
      std::copy(wte_local + row * C, wte_local + (row + 1) * C, y);
    } else {
      std::fill(y, y + C, T(0));
    }
  }
}

// out[n, c] = wte_local[tok[n] - vocab_start, c] · [token in range], so
// dL/dwte_local[v, c] = sum over n with tok[n] - vocab_start = v of dout[n, c].
template <typename T>
void embedding_backward(T* dwte_local, const T* dout, const int32_t* tokens, int64_t N, int64_t C,
                        int64_t vocab_start, int64_t V_local) {
  const int64_t blocks = (C + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static) if (N * C >= kMinParallel)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t c0 = blk * kColumnBlock;
    const int64_t width = std::min(kColumnBlock, C - c0);
    for (int64_t n = 0; n < N; ++n) {
      const int64_t row = static_cast<int64_t>(tokens[n]) - vocab_start;
      if (row < 0 || row >= V_local) continue;
      T* dw = dwte_local + row * C + c0;
      const T* dy = dout + n * C + c0;
      for (int64_t j = 0; j < width; ++j) dw[j] += dy[j];
    }
  }
}

template <typename T>
void positional_forward(T* out, const T* wpe, int64_t B, int64_t Tlen, int64_t C) {
#pragma omp parallel for schedule(static) if (B * Tlen * C >= kMinParallel)
  for (int64_t bt = 0; bt < B * Tlen; ++bt) {
    const T* p = wpe + (bt % Tlen) * C;
    T* y = out + bt * C;
    for (int64_t c = 0; c < C; ++c) y[c] += p[c];
  }
}

// out[b, t, c] += wpe[t, c], so dL/dwpe[t, c] = sum over b of dout[b, t, c]. Each thread owns
// whole rows t of dwpe and adds the batch in order b = 0..B-1.
template <typename T>
void positional_backward(T* dwpe, const T* dout, int64_t B, int64_t Tlen, int64_t C) {
#pragma omp parallel for schedule(static) if (B * Tlen * C >= kMinParallel)
  for (int64_t t = 0; t < Tlen; ++t) {
    T* dw = dwpe + t * C;
    for (int64_t b = 0; b < B; ++b) {
      const T* dy = dout + (b * Tlen + t) * C;
      for (int64_t c = 0; c < C; ++c) dw[c] += dy[c];
    }
  }
}

template void embedding_forward<float>(float*, const int32_t*, const float*, int64_t, int64_t,
                                       int64_t, int64_t);
template void embedding_forward<double>(double*, const int32_t*, const double*, int64_t, int64_t,
                                        int64_t, int64_t);
template void embedding_backward<float>(float*, const float*, const int32_t*, int64_t, int64_t,
                                        int64_t, int64_t);
template void embedding_backward<double>(double*, const double*, const int32_t*, int64_t, int64_t,
                                         int64_t, int64_t);
template void positional_forward<float>(float*, const float*, int64_t, int64_t, int64_t);
template void positional_forward<double>(double*, const double*, int64_t, int64_t, int64_t);
template void positional_backward<float>(float*, const float*, int64_t, int64_t, int64_t);
template void positional_backward<double>(double*, const double*, int64_t, int64_t, int64_t);

}  // namespace tessera::backends::cpu
