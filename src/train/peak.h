// The machine's measured sgemm peak: the denominator of model FLOPs utilisation (MFU).
#pragma once

namespace tessera::train {

// GFLOP/s of cblas_sgemm on n x n x n with the current BLAS thread count, best of `repeats`.
double measure_sgemm_gflops(int n = 1024, int repeats = 3);

}  // namespace tessera::train
