// Vocab-parallel softmax cross-entropy passes on the CPU, threaded over rows. Each pass touches
// only this rank's real columns; padding columns are never read.
#include "backends/cpu/crossentropy.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "core/fast_exp.h"

namespace tessera::backends::cpu {
using core::fast_exp;
namespace {

// Calls touching fewer logits than this run on the calling thread: waking the team would cost
// more than the work.
constexpr int64_t kMinParallelElements = 1 << 15;

void check_shape(int64_t N, int64_t n_cols, int64_t ld) {
  TESSERA_ASSERT(N >= 0 && n_cols >= 0 && n_cols <= ld,
                 "cross-entropy: need N >= 0 and 0 <= n_cols <= ld");
}

// The column of `target` in this rank's shard, or -1 when it is ignored or lives on another rank.
inline int64_t local_column(int32_t target, int64_t n_cols, int64_t vocab_start) {
  const int64_t col = static_cast<int64_t>(target) - vocab_start;
  return (target >= 0 && col >= 0 && col < n_cols) ? col : -1;
}

}  // namespace

template <typename T>
void xent_row_max(T* row_max, const T* logits, int64_t N, int64_t n_cols, int64_t ld) {
  check_shape(N, n_cols, ld);
#pragma omp parallel for schedule(static) if (N * n_cols >= kMinParallelElements)
  for (int64_t n = 0; n < N; ++n) {
    const T* row = logits + n * ld;
    T m = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : m)
    for (int64_t v = 0; v < n_cols; ++v) m = row[v] > m ? row[v] : m;  // vectorizes
    row_max[n] = m;
  }
}

template <typename T>
void xent_row_sumexp_target(T* sumexp, T* target_logit, const T* logits, const int32_t* targets,
                            const T* row_max, int64_t N, int64_t n_cols, int64_t ld,
                            int64_t vocab_start) {
  check_shape(N, n_cols, ld);
#pragma omp parallel for schedule(static) if (N * n_cols >= kMinParallelElements)
  for (int64_t n = 0; n < N; ++n) {
    const T* row = logits + n * ld;
    const T m = row_max[n];
    T s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t v = 0; v < n_cols; ++v) s += fast_exp(row[v] - m);
    sumexp[n] = s;
    const int64_t col = local_column(targets[n], n_cols, vocab_start);
    target_logit[n] = col >= 0 ? row[col] : T(0);
  }
}

template <typename T>
void xent_loss(T* losses, const T* row_max, const T* sumexp, const T* target_logit,
               const int32_t* targets, int64_t N) {
  TESSERA_ASSERT(N >= 0, "cross-entropy: need N >= 0");
#pragma omp parallel for schedule(static) if (N >= kMinParallelElements)
  for (int64_t n = 0; n < N; ++n) {
    losses[n] = targets[n] < 0 ? T(0) : std::log(sumexp[n]) + row_max[n] - target_logit[n];
  }
}

template <typename T>
void xent_backward(T* dlogits, const T* logits, const int32_t* targets, const T* row_max,
                   const T* sumexp, const T* dlosses, int64_t N, int64_t n_cols, int64_t ld,
                   int64_t vocab_start) {
  check_shape(N, n_cols, ld);
#pragma omp parallel for schedule(static) if (N * n_cols >= kMinParallelElements)
  for (int64_t n = 0; n < N; ++n) {
    T* drow = dlogits + n * ld;
    if (targets[n] < 0) {
      std::fill(drow, drow + ld, T(0));
      continue;
    }
    const T* row = logits + n * ld;
    const T m = row_max[n];
    const T scale = dlosses[n] / sumexp[n];  // softmax_v * dloss = exp(z_v - m) * scale
    // Element v is read before it is written, so dlogits == logits is safe.
#pragma omp simd
    for (int64_t v = 0; v < n_cols; ++v) drow[v] = fast_exp(row[v] - m) * scale;
    const int64_t col = local_column(targets[n], n_cols, vocab_start);
    if (col >= 0) drow[col] -= dlosses[n];
    std::fill(drow + n_cols, drow + ld, T(0));
  }
}

template void xent_row_max<float>(float*, const float*, int64_t, int64_t, int64_t);
template void xent_row_max<double>(double*, const double*, int64_t, int64_t, int64_t);
template void xent_row_sumexp_target<float>(float*, float*, const float*, const int32_t*,
                                            const float*, int64_t, int64_t, int64_t, int64_t);
template void xent_row_sumexp_target<double>(double*, double*, const double*, const int32_t*,
                                             const double*, int64_t, int64_t, int64_t, int64_t);
template void xent_loss<float>(float*, const float*, const float*, const float*, const int32_t*,
                               int64_t);
template void xent_loss<double>(double*, const double*, const double*, const double*,
                                const int32_t*, int64_t);
template void xent_backward<float>(float*, const float*, const int32_t*, const float*, const float*,
                                   const float*, int64_t, int64_t, int64_t, int64_t);
template void xent_backward<double>(double*, const double*, const int32_t*, const double*,
                                    const double*, const double*, int64_t, int64_t, int64_t,
                                    int64_t);

}  // namespace tessera::backends::cpu
