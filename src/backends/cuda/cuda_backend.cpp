// Placeholder until the CudaBackend lands: the factory of a CUDA build.
#include "backends/cuda_factory.h"

namespace tessera::backends {

core::Result<std::unique_ptr<Backend>> make_cuda_backend(int, int) {
  return core::Status::error("train.device 'cuda': the CUDA backend is not wired yet; use cpu");
}

bool cuda_backend_built() { return true; }

}  // namespace tessera::backends
