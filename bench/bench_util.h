// Helpers shared by the benchmark programs.
#pragma once

#include <algorithm>
#include <vector>

namespace tessera::bench {

// Median of step times (mean of the two middle values for an even count).
inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace tessera::bench
