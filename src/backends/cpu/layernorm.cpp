// Layer normalisation forward and backward, rows in parallel; the parameter-gradient reduction
// is race-free and in a fixed order (per-thread partial sums, added thread by thread).
#include "backends/cpu/layernorm.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

namespace tessera::backends::cpu {
namespace {

// Below this many elements a parallel region costs more than it saves.
constexpr int64_t kMinParallel = 1 << 14;

// Per-thread partial sums for dweight and dbias: [thread][2][C]. Grows, never shrinks, so a
// training loop allocates only on its first step.
template <typename T>
T* backward_scratch(size_t elements) {
  thread_local std::vector<T> scratch;
  if (scratch.size() < elements) scratch.resize(elements);
  return scratch.data();
}

}  // namespace

template <typename T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* inp, const T* weight, const T* bias,
                       int64_t N, int64_t C) {
  const T eps = static_cast<T>(kLayernormEps);
#pragma omp parallel for schedule(static) if (N * C >= kMinParallel)
  for (int64_t n = 0; n < N; ++n) {
    const T* x = inp + n * C;
    T* y = out + n * C;
    // Two passes (mean, then squared deviations): no cancellation as in E[x²] - E[x]².
    // omp simd lets the reductions vectorise (a fixed reassociation, so still deterministic).
    T sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t c = 0; c < C; ++c) sum += x[c];
    const T m = sum / static_cast<T>(C);
    T sq = 0;
#pragma omp simd reduction(+ : sq)
    for (int64_t c = 0; c < C; ++c) {
      const T d = x[c] - m;
      sq += d * d;
    }
    const T s = T(1) / std::sqrt(sq / static_cast<T>(C) + eps);
    for (int64_t c = 0; c < C; ++c) y[c] = (x[c] - m) * s * weight[c] + bias[c];
    mean[n] = m;
    rstd[n] = s;
  }
}

// Per row (dropping n), with xhat = (x - mean) · rstd and y = xhat · w + b:
//   dL/db = dout,  dL/dw = dout · xhat  (summed over rows).
//   g = dout · w is dL/dxhat. mean and rstd depend on every x_j:
//     d xhat_i / d x_j = rstd · (δ_ij - 1/C - xhat_i · xhat_j / C),
//   so dL/dx_i = rstd · (g_i - mean_j(g_j) - xhat_i · mean_j(g_j · xhat_j)).
template <typename T>
void layernorm_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight,
                        const T* mean, const T* rstd, int64_t N, int64_t C) {
  const bool parallel = N * C >= kMinParallel;
  const int max_threads = parallel ? omp_get_max_threads() : 1;
  T* scratch = backward_scratch<T>(static_cast<size_t>(max_threads) * 2 * C);

#pragma omp parallel if (parallel)
  {
    const int threads = omp_get_num_threads();
    const int tid = omp_get_thread_num();
    T* dw_part = scratch + static_cast<int64_t>(tid) * 2 * C;
    T* db_part = dw_part + C;
    std::fill(dw_part, dw_part + 2 * C, T(0));
    // Fixed contiguous row blocks, so each partial sum is the same for the same thread count.
    const int64_t n0 = N * tid / threads;
    const int64_t n1 = N * (tid + 1) / threads;
    for (int64_t n = n0; n < n1; ++n) {
      const T* x = inp + n * C;
      const T* dy = dout + n * C;
      T* dx = dinp + n * C;
      const T m = mean[n];
      const T s = rstd[n];
      T g_sum = 0;
      T gx_sum = 0;
#pragma omp simd reduction(+ : g_sum, gx_sum)
      for (int64_t c = 0; c < C; ++c) {
        const T xhat = (x[c] - m) * s;
        const T g = dy[c] * weight[c];
        g_sum += g;
        gx_sum += g * xhat;
        dw_part[c] += dy[c] * xhat;
        db_part[c] += dy[c];
      }
      const T g_mean = g_sum / static_cast<T>(C);
      const T gx_mean = gx_sum / static_cast<T>(C);
      for (int64_t c = 0; c < C; ++c) {
        const T xhat = (x[c] - m) * s;
        dx[c] += s * (dy[c] * weight[c] - g_mean - xhat * gx_mean);
      }
    }
#pragma omp barrier
    // Add the partials in thread order, columns split over the threads.
#pragma omp for schedule(static)
    for (int64_t c = 0; c < C; ++c) {
      T dw = 0;
      T db = 0;
      for (int t = 0; t < threads; ++t) {
        dw += scratch[static_cast<int64_t>(t) * 2 * C + c];
        db += scratch[static_cast<int64_t>(t) * 2 * C + C + c];
      }
      dweight[c] += dw;
      dbias[c] += db;
    }
  }
}

template void layernorm_forward<float>(float*, float*, float*, const float*, const float*,
                                       const float*, int64_t, int64_t);
template void layernorm_forward<double>(double*, double*, double*, const double*, const double*,
                                        const double*, int64_t, int64_t);
template void layernorm_backward<float>(float*, float*, float*, const float*, const float*,
                                        const float*, const float*, const float*, int64_t, int64_t);
template void layernorm_backward<double>(double*, double*, double*, const double*, const double*,
                                         const double*, const double*, const double*, int64_t,
                                         int64_t);

}  // namespace tessera::backends::cpu
