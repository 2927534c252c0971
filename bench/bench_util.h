// Helpers shared by the benchmark programs.
#pragma once

#include <sys/resource.h>

#include <algorithm>
#include <vector>

namespace tessera::bench {

// Median of step times (mean of the two middle values for an even count).
inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// This process's peak resident set so far, in MiB (getrusage's ru_maxrss is in KiB on Linux).
inline double peak_rss_mib() {
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;
}

}  // namespace tessera::bench
