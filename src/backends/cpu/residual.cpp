// Element-wise residual helpers: plain vectorisable loops split statically over OpenMP threads.
// The backward of out = a + b is da = db = dout: callers use add_inplace; there is no kernel.
#include "backends/cpu/residual.h"

#include <omp.h>

#include <cstddef>
#include <vector>

namespace tessera::backends::cpu {
namespace {
constexpr int64_t kMinParallel = 1 << 15;
}  // namespace

template <typename T>
void residual_forward(T* out, const T* a, const T* b, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kMinParallel)
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

template <typename T>
void add_inplace(T* acc, const T* x, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kMinParallel)
  for (int64_t i = 0; i < n; ++i) acc[i] += x[i];
}

template <typename T>
void scale_inplace(T* x, T s, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kMinParallel)
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}

template <typename T>
double sum_squares(const T* x, int64_t n) {
  // One partial per thread over a fixed contiguous block, added in thread order: an OpenMP
  // reduction clause leaves the combining order to the runtime.
  const bool parallel = n >= kMinParallel;
  // thread_local and only growing: no allocation after the first call.
  thread_local std::vector<double> partial;
  const size_t slots = static_cast<size_t>(parallel ? omp_get_max_threads() : 1);
  if (partial.size() < slots) partial.resize(slots);
  double* part = partial.data();  // the caller's buffer: inside the region `partial` is per thread
  int used = 1;
#pragma omp parallel if (parallel)
  {
    const int threads = omp_get_num_threads();
    const int tid = omp_get_thread_num();
    const int64_t i0 = n * tid / threads;
    const int64_t i1 = n * (tid + 1) / threads;
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = i0; i < i1; ++i) {
      const double v = static_cast<double>(x[i]);
      s += v * v;
    }
    part[tid] = s;
    if (tid == 0) used = threads;
  }
  double total = 0.0;
  for (int t = 0; t < used; ++t) total += part[t];
  return total;
}

template <typename T>
void add_bias(T* out, const T* bias, int64_t N, int64_t C) {
#pragma omp parallel for schedule(static) if (N * C > 32768)
  for (int64_t n = 0; n < N; ++n) {
    T* row = out + n * C;
    for (int64_t c = 0; c < C; ++c) row[c] += bias[c];
  }
}

template void add_bias<float>(float*, const float*, int64_t, int64_t);
template void add_bias<double>(double*, const double*, int64_t, int64_t);
template void residual_forward<float>(float*, const float*, const float*, int64_t);
template void residual_forward<double>(double*, const double*, const double*, int64_t);
template void add_inplace<float>(float*, const float*, int64_t);
template void add_inplace<double>(double*, const double*, int64_t);
template void scale_inplace<float>(float*, float, int64_t);
template void scale_inplace<double>(double*, double, int64_t);
template double sum_squares<float>(const float*, int64_t);
template double sum_squares<double>(const double*, int64_t);

}  // namespace tessera::backends::cpu
