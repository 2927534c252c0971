// Thread settings; see threads.h.
#include "core/threads.h"

#include <cblas.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <thread>

namespace tessera::core {

void prepare_thread_environment(int /*argc*/, char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
  // libgomp reads OMP_WAIT_POLICY when it is loaded, so the setting only takes effect in a fresh
  // image of this program. If exec fails we simply go on with the runtime's default.
  execv("/proc/self/exe", argv);
}

int hardware_threads() { return std::max(1u, std::thread::hardware_concurrency()); }

int set_threads(int requested, int local_ranks) {
  int n = requested > 0 ? requested : std::max(1, hardware_threads() / std::max(1, local_ranks));
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
  return n;
}

}  // namespace tessera::core
