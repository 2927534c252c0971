// Causal multi-head self-attention on the CPU. Each (batch, head) block is one OpenMP work item;
// its GEMMs run on the calling thread (OpenBLAS's OpenMP build goes single-threaded inside a
// parallel region) and read q/k/v in place from qkv through leading dimensions.
#include "backends/cpu/attention.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/fast_exp.h"

namespace tessera::backends::cpu {
using core::fast_exp;
namespace {

// Query rows are processed in blocks of this many: block r0..r0+rows-1 only sees keys
// 0..r0+rows-1, so the GEMMs skip almost all of the masked upper triangle (at T=1024 they do
// 56% of the full-square work) while staying large enough for BLAS to run at speed.
constexpr int64_t kRowBlock = 128;

// Below this many multiply-adds per GEMM pass (B * NH * T^2 * HS) waking the thread team costs
// more than the work; such calls run on the calling thread.
constexpr int64_t kMinParallelWork = 1 << 16;

// Row-major C = alpha * op(A) op(B) + beta * C.
inline void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                 const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                 int64_t ldc) {
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, static_cast<int>(m), static_cast<int>(n),
              static_cast<int>(k), alpha, a, static_cast<int>(lda), b, static_cast<int>(ldb), beta,
              c, static_cast<int>(ldc));
}
inline void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha,
                 const double* a, int64_t lda, const double* b, int64_t ldb, double beta, double* c,
                 int64_t ldc) {
  cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, static_cast<int>(m), static_cast<int>(n),
              static_cast<int>(k), alpha, a, static_cast<int>(lda), b, static_cast<int>(ldb), beta,
              c, static_cast<int>(ldc));
}

// In place over row[0..n): scores -> probabilities, subtracting the max so exp never overflows
// (the largest term is exp(0) = 1, so the sum is >= 1). Writes the row's statistics
// [max, 1 / sum] for backward's recomputation (recompute_probabilities, the same operations).
template <typename Real>
inline void softmax_row_inplace(Real* row, int64_t n, Real* stats) {
  Real m = row[0];
#pragma omp simd reduction(max : m)
  for (int64_t j = 1; j < n; ++j) m = row[j] > m ? row[j] : m;  // a select vectorizes
  Real sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j) {
    const Real e = fast_exp(row[j] - m);
    row[j] = e;
    sum += e;
  }
  const Real inv = Real(1) / sum;
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) row[j] *= inv;
  stats[0] = m;
  stats[1] = inv;
}

// In place over row[0..n): scores -> the probabilities softmax_row_inplace made of the same
// scores, from its statistics: exp(s - max), then times 1 / sum, rounded as it rounded them.
template <typename Real>
inline void recompute_probabilities(Real* row, int64_t n, const Real* stats) {
  const Real m = stats[0];
  const Real inv = stats[1];
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) row[j] = fast_exp(row[j] - m);
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) row[j] *= inv;
}

void check_sizes(int64_t B, int64_t T, int64_t C, int64_t NH) {
  TESSERA_ASSERT(B > 0 && T > 0 && C > 0 && NH > 0, "attention: sizes must be positive");
  TESSERA_ASSERT(C % NH == 0, "attention: channels C must split evenly over NH heads");
  // Invariant: every leading dimension and GEMM size fits BLAS's int.
  TESSERA_ASSERT(3 * C <= INT32_MAX && T <= INT32_MAX, "attention: sizes exceed BLAS int range");
}

// One thread's slice: a block of probability rows (rows x T) and, in backward, a block of dP/dS
// rows (rows x keys).
int64_t slice_size(int64_t T) { return 2 * std::min(T, kRowBlock) * T; }

}  // namespace

int64_t attention_workspace_size(int64_t /*B*/, int64_t T, int64_t /*C*/, int64_t /*NH*/) {
  return static_cast<int64_t>(omp_get_max_threads()) * slice_size(T);
}

template <typename Real>
void attention_forward(Real* out, Real* stats, Real* workspace, const Real* qkv, int64_t B,
                       int64_t T, int64_t C, int64_t NH) {
  check_sizes(B, T, C, NH);
  const int64_t HS = C / NH;
  const int64_t C3 = 3 * C;
  const Real scale = Real(1) / std::sqrt(static_cast<Real>(HS));
  const bool parallel = B * NH > 1 && B * NH * T * T * HS >= kMinParallelWork;

#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t bh = 0; bh < B * NH; ++bh) {
    const int64_t b = bh / NH;
    const int64_t h = bh % NH;
    const Real* q = qkv + b * T * C3 + h * HS;  // (T, HS), ld 3C
    const Real* k = q + C;
    const Real* v = q + 2 * C;
    Real* o = out + b * T * C + h * HS;  // (T, HS), ld C
    Real* st = stats + bh * T * 2;       // (T, 2)
    // Invariant: the thread's slice lies inside attention_workspace_size(...) elements, which
    // holds as long as the thread count has not grown since the workspace was sized.
    Real* pb = workspace + static_cast<int64_t>(omp_get_thread_num()) * slice_size(T);

    for (int64_t r0 = 0; r0 < T; r0 += kRowBlock) {
      const int64_t rows = std::min(kRowBlock, T - r0);
      const int64_t keys = r0 + rows;  // causal: this block attends to keys 0..keys-1
      // S = scale * Q_block K_prefix^T  (rows, keys), ld T
      gemm(false, true, rows, keys, HS, scale, q + r0 * C3, C3, k, C3, Real(0), pb, T);
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t t = r0 + r;
        Real* row = pb + r * T;
        softmax_row_inplace(row, t + 1, st + t * 2);
        std::fill(row + t + 1, row + keys, Real(0));  // masked: P = 0 above the diagonal
      }
      // O_block = P_block V_prefix  (rows, HS)
      gemm(false, false, rows, HS, keys, Real(1), pb, T, v, C3, Real(0), o + r0 * C, C);
    }
  }
}

template <typename Real>
void attention_backward(Real* dqkv, Real* workspace, const Real* dout, const Real* qkv,
                        const Real* stats, int64_t B, int64_t T, int64_t C, int64_t NH) {
  check_sizes(B, T, C, NH);
  const int64_t HS = C / NH;
  const int64_t C3 = 3 * C;
  const Real scale = Real(1) / std::sqrt(static_cast<Real>(HS));
  const bool parallel = B * NH > 1 && B * NH * T * T * HS >= kMinParallelWork;

#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t bh = 0; bh < B * NH; ++bh) {
    const int64_t b = bh / NH;
    const int64_t h = bh % NH;
    const Real* q = qkv + b * T * C3 + h * HS;
    const Real* k = q + C;
    const Real* v = q + 2 * C;
    const Real* st = stats + bh * T * 2;
    const Real* dout_bh = dout + b * T * C + h * HS;  // (T, HS), ld C
    Real* dq = dqkv + b * T * C3 + h * HS;
    Real* dk = dq + C;
    Real* dv = dq + 2 * C;
    // Invariant: the thread's slice lies inside attention_workspace_size(...) elements, which
    // holds as long as the thread count has not grown since the workspace was sized.
    Real* pb = workspace + static_cast<int64_t>(omp_get_thread_num()) * slice_size(T);  // P rows
    Real* ds = pb + std::min(T, kRowBlock) * T;  // dP, then dS, rows

    // dK and dV accumulate over query blocks: start them at zero.
    for (int64_t t = 0; t < T; ++t) {
      std::fill(dk + t * C3, dk + t * C3 + HS, Real(0));
      std::fill(dv + t * C3, dv + t * C3 + HS, Real(0));
    }
    for (int64_t r0 = 0; r0 < T; r0 += kRowBlock) {
      const int64_t rows = std::min(kRowBlock, T - r0);
      const int64_t keys = r0 + rows;
      // P_block (rows, keys), ld T: forward's scores and probabilities again, from its statistics.
      gemm(false, true, rows, keys, HS, scale, q + r0 * C3, C3, k, C3, Real(0), pb, T);
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t t = r0 + r;
        recompute_probabilities(pb + r * T, t + 1, st + t * 2);
        std::fill(pb + r * T + t + 1, pb + r * T + keys, Real(0));
      }
      const Real* dob = dout_bh + r0 * C;  // (rows, HS), ld C
      // dV_prefix += P_block^T dO_block  (keys, HS)
      gemm(true, false, keys, HS, rows, Real(1), pb, T, dob, C, Real(1), dv, C3);
      // dP = dO_block V_prefix^T  (rows, keys), compact with ld = keys
      gemm(false, true, rows, keys, HS, Real(1), dob, C, v, C3, Real(0), ds, keys);
      // dS = scale * P ⊙ (dP − rowsum(dP ⊙ P)), zero on the masked part of the block.
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t t = r0 + r;
        const Real* prow = pb + r * T;
        Real* drow = ds + r * keys;
        Real dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int64_t j = 0; j <= t; ++j) dot += prow[j] * drow[j];
#pragma omp simd
        for (int64_t j = 0; j <= t; ++j) drow[j] = scale * prow[j] * (drow[j] - dot);
        std::fill(drow + t + 1, drow + keys, Real(0));
      }
      // dQ_block = dS K_prefix  (rows, HS), overwritten
      gemm(false, false, rows, HS, keys, Real(1), ds, keys, k, C3, Real(0), dq + r0 * C3, C3);
      // dK_prefix += dS^T Q_block  (keys, HS)
      gemm(true, false, keys, HS, rows, Real(1), ds, keys, q + r0 * C3, C3, Real(1), dk, C3);
    }
  }
}

template void attention_forward<float>(float*, float*, float*, const float*, int64_t, int64_t,
                                       int64_t, int64_t);
template void attention_forward<double>(double*, double*, double*, const double*, int64_t, int64_t,
                                        int64_t, int64_t);
template void attention_backward<float>(float*, float*, const float*, const float*, const float*,
                                        int64_t, int64_t, int64_t, int64_t);
template void attention_backward<double>(double*, double*, const double*, const double*,
                                         const double*, int64_t, int64_t, int64_t, int64_t);

}  // namespace tessera::backends::cpu
