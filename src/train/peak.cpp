// sgemm peak measurement; see peak.h.
#include "train/peak.h"

#include <cblas.h>

#include <algorithm>
#include <vector>

#include "core/timer.h"

namespace tessera::train {

double measure_sgemm_gflops(int n, int repeats) {
  std::vector<float> a(static_cast<size_t>(n) * n, 0.5f), b(a), c(a.size(), 0.0f);
  double best = 0;
  for (int r = 0; r < repeats + 1; ++r) {  // the first run warms caches and threads up
    core::Timer t;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(), n,
                0.0f, c.data(), n);
    const double s = t.seconds();
    if (r > 0) best = std::max(best, 2.0 * n * n * static_cast<double>(n) / s / 1e9);
  }
  return best;
}

}  // namespace tessera::train
