// make_backend: the one place a run's device name becomes a Backend.
#include "backends/backend.h"

#include "backends/cpu/cpu_backend.h"
#include "backends/cuda_factory.h"

namespace tessera::backends {

core::Result<std::unique_ptr<Backend>> make_backend(const std::string& device, int local_rank,
                                                    int local_size) {
  if (device == "cpu") return std::unique_ptr<Backend>(std::make_unique<CpuBackend>());
  if (device == "cuda") return make_cuda_backend(local_rank, local_size);
  return core::Status::error("train.device '" + device + "' is not a backend; use cpu or cuda");
}

Backend& cpu_backend() {
  static CpuBackend backend;
  return backend;
}

}  // namespace tessera::backends
