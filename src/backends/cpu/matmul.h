// Fully connected layer on the CPU: out = inp · weightᵀ + bias, forward and backward.
// Every GEMM goes through BLAS (OpenBLAS, OpenMP build); called inside an OpenMP parallel
// region it runs single-threaded on the calling thread.
#pragma once

#include <cstdint>

namespace tessera::backends::cpu {

// Float products of 1 to kFewRows rows take the few-rows kernel (few_rows_matmul.h): each row in
// one fixed order, so a decode row gives the same bits alone or in a batch of up to kFewRows rows.
constexpr int64_t kFewRows = 32;

// out: (N, OC) = inp (N, C) · weight (OC, C)ᵀ + bias (OC), broadcast over rows. OVERWRITES out.
// bias may be null (no bias). out must not alias inp or weight.
template <typename T>
void matmul_forward(T* out, const T* inp, const T* weight, const T* bias, int64_t N, int64_t C,
                    int64_t OC);

// Backward of matmul_forward. dout: (N, OC); inp: (N, C); weight: (OC, C).
//   dinp (N, C)     = dout · weight        OVERWRITES; skipped when dinp is null.
//   dweight (OC, C) += doutᵀ · inp         ACCUMULATES.
//   dbias (OC)      += sum over n of dout  ACCUMULATES; skipped when dbias is null.
// Deterministic: dbias sums rows in order 0..N-1 whatever the thread count.
template <typename T>
void matmul_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight,
                     int64_t N, int64_t C, int64_t OC);

}  // namespace tessera::backends::cpu
