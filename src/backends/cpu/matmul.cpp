// Fully connected layer through BLAS; only the bias broadcast and bias reduction are our loops.
#include "backends/cpu/matmul.h"

#include <cblas.h>

#include <algorithm>
#include <type_traits>

#include "backends/cpu/few_rows_matmul.h"

namespace tessera::backends::cpu {
namespace {

// Row-major C (M, N) = alpha · op(A) · op(B) + beta · C, dispatched on T.
void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t M, int64_t N, int64_t K, float alpha,
          const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* Cm,
          int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta, tb, static_cast<blasint>(M), static_cast<blasint>(N),
              static_cast<blasint>(K), alpha, A, static_cast<blasint>(lda), B,
              static_cast<blasint>(ldb), beta, Cm, static_cast<blasint>(ldc));
}

void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t M, int64_t N, int64_t K, double alpha,
          const double* A, int64_t lda, const double* B, int64_t ldb, double beta, double* Cm,
          int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta, tb, static_cast<blasint>(M), static_cast<blasint>(N),
              static_cast<blasint>(K), alpha, A, static_cast<blasint>(lda), B,
              static_cast<blasint>(ldb), beta, Cm, static_cast<blasint>(ldc));
}

// Row-major y (M) = alpha · A (M, N) · x + beta · y, dispatched on T.
void gemv(int64_t M, int64_t N, float alpha, const float* A, const float* x, float beta, float* y) {
  cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<blasint>(M), static_cast<blasint>(N), alpha,
              A, static_cast<blasint>(N), x, 1, beta, y, 1);
}

void gemv(int64_t M, int64_t N, double alpha, const double* A, const double* x, double beta,
          double* y) {
  cblas_dgemv(CblasRowMajor, CblasNoTrans, static_cast<blasint>(M), static_cast<blasint>(N), alpha,
              A, static_cast<blasint>(N), x, 1, beta, y, 1);
}

// Columns per thread task in the bias reduction: long enough to vectorise, and a multiple of a
// cache line so neighbouring tasks never share one.
constexpr int64_t kBiasBlock = 64;
// Below this many elements a parallel region costs more than it saves.
constexpr int64_t kMinParallel = 1 << 14;

}  // namespace

template <typename T>
void matmul_forward(T* out, const T* inp, const T* weight, const T* bias, int64_t N, int64_t C,
                    int64_t OC) {
  // 1 to kFewRows rows in float: few_rows_forward, one fixed order per row, so a decode row gives
  // the same bits alone or in a batch of up to kFewRows rows. One row in double: GEMV (below).
  // More rows: GEMM.
  if constexpr (std::is_same_v<T, float>) {
    if (N <= kFewRows) return few_rows_forward(out, inp, weight, bias, N, C, OC);
  }
  T beta = 0;
  if (bias != nullptr) {
    // Seed every row of out with the bias, then let the GEMM add onto it (beta = 1).
#pragma omp parallel for schedule(static) if (N * OC >= kMinParallel)
    for (int64_t n = 0; n < N; ++n) {
      std::copy(bias, bias + OC, out + n * OC);
    }
    beta = 1;
  }
  // One row: GEMV reads each weight once, where OpenBLAS's GEMM would first pack (copy) the whole
  // weight matrix for a single row (on 2 cores this halved a 124M float decode step, 76 -> 39 ms,
  // before the few-rows kernel took float's small steps; docs/PERF.md "Serving").
  if (N == 1) {
    gemv(OC, C, T(1), weight, inp, beta, out);
    return;
  }
  gemm(CblasNoTrans, CblasTrans, N, OC, C, T(1), inp, C, weight, C, beta, out, OC);
}

// From out[n, o] = sum_c inp[n, c] · weight[o, c] + bias[o]:
//   dL/dinp[n, c]    = sum_o dout[n, o] · weight[o, c]   -> dinp = dout · weight
//   dL/dweight[o, c] = sum_n dout[n, o] · inp[n, c]      -> dweight += doutᵀ · inp
//   dL/dbias[o]      = sum_n dout[n, o]
template <typename T>
void matmul_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight,
                     int64_t N, int64_t C, int64_t OC) {
  if (dinp != nullptr) {
    gemm(CblasNoTrans, CblasNoTrans, N, C, OC, T(1), dout, OC, weight, C, T(0), dinp, C);
  }
  gemm(CblasTrans, CblasNoTrans, OC, C, N, T(1), dout, OC, inp, C, T(1), dweight, C);
  if (dbias != nullptr) {
    const int64_t blocks = (OC + kBiasBlock - 1) / kBiasBlock;
    // Each task owns a block of columns and walks all rows in order: race-free, deterministic.
#pragma omp parallel for schedule(static) if (N * OC >= kMinParallel)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t o0 = blk * kBiasBlock;
      const int64_t width = std::min(kBiasBlock, OC - o0);
      T acc[kBiasBlock] = {};
      for (int64_t n = 0; n < N; ++n) {
        const T* row = dout + n * OC + o0;
        for (int64_t j = 0; j < width; ++j) acc[j] += row[j];
      }
      for (int64_t j = 0; j < width; ++j) dbias[o0 + j] += acc[j];
    }
  }
}

template void matmul_forward<float>(float*, const float*, const float*, const float*, int64_t,
                                    int64_t, int64_t);
template void matmul_forward<double>(double*, const double*, const double*, const double*, int64_t,
                                     int64_t, int64_t);
template void matmul_backward<float>(float*, float*, float*, const float*, const float*,
                                     const float*, int64_t, int64_t, int64_t);
template void matmul_backward<double>(double*, double*, double*, const double*, const double*,
                                      const double*, int64_t, int64_t, int64_t);

}  // namespace tessera::backends::cpu
